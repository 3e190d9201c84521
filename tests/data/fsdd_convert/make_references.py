"""Write references.npz: what the codebases' own audio libraries compute on
some of these recordings, for tests/test_convert_layouts.py to compare the
converter's recipes with, without those libraries.

Run each part in an environment that has its library (they need not be the
same one; each run keeps the other part's arrays):

    # librosa + resampy, as OGM-GE's loaders call them (no torch needed)
    pip install librosa resampy && python tests/data/fsdd_convert/make_references.py librosa
    # torchaudio's Kaldi filterbank, as MLA's extract_fbank.py and OGM-GE's process_audio.py call it
    python tests/data/fsdd_convert/make_references.py kaldi [--kaldi-py PATH/torchaudio/compliance/kaldi.py]

``--kaldi-py`` loads torchaudio's ``compliance/kaldi.py`` from a file (for
example from an unpacked torchaudio wheel) when no torchaudio matching the
installed torch can be installed: that file uses nothing else of torchaudio
for ``fbank``. The arrays written (float32 unless noted):

- ``ogm_ge_wave:<clip>``: ``librosa.load(clip, sr=22050, res_type="kaiser_best")``;
- ``ogm_ge_spec:<clip>``: OGM-GE's CramedDataset pipeline on that waveform
  (repeated to 3 s, clipped, ``np.log(np.abs(librosa.stft(y, n_fft=512,
  hop_length=353, pad_mode="reflect")) + 1e-7)``);
- ``mel_spec:<clip>``: ``log(librosa.feature.melspectrogram(y=librosa.load(clip,
  sr=16000, res_type="kaiser_best")[0] repeated to 3 s, sr=16000, n_fft=512,
  hop_length=256, n_mels=128, htk=True, norm=None, pad_mode="reflect") + 1e-6)``;
- ``kaldi_fbank:<clip>``: ``torchaudio.compliance.kaldi.fbank(w - w.mean(),
  htk_compat=True, sample_frequency=8000, use_energy=False,
  window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)``, not
  yet padded to 1024 frames;
- ``kaldi_wave16k`` (int16) and ``kaldi_fbank16k``: a 16 kHz waveform (the
  first kaldi clip resampled by librosa, as 16-bit PCM) and its filterbank,
  since CREMA-D, Kinetics-Sounds and AVE audio is 16 kHz;
- ``versions``: the library versions used, as a JSON string.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "references.npz"
OGM_GE_CLIPS = ["3_jackson_0.wav"]
MEL_CLIPS = ["5_lucas_0.wav"]
KALDI_CLIPS = ["0_george_0.wav", "1_jackson_0.wav", "2_lucas_0.wav", "3_nicolas_0.wav", "4_george_0.wav",
               "5_jackson_0.wav"]


def _existing() -> dict[str, np.ndarray]:
    if not OUT.exists():
        return {}
    with np.load(OUT) as f:
        return {k: f[k] for k in f.files}


def _repeat(y: np.ndarray, n: int) -> np.ndarray:
    # OGM-GE: np.tile(samples, 3)[:22050 * 3]; the same for clips of 1 s or more, and
    # defined for these shorter recordings too.
    return np.tile(y, math.ceil(n / len(y)))[:n]


def librosa_part(arrays: dict[str, np.ndarray], versions: dict[str, str]) -> None:
    import librosa
    import resampy

    versions.update(librosa=librosa.__version__, resampy=resampy.__version__, numpy=np.__version__)
    for clip in OGM_GE_CLIPS:
        y, _ = librosa.load(HERE / clip, sr=22050, res_type="kaiser_best")
        arrays[f"ogm_ge_wave:{clip}"] = y.astype(np.float32)
        r = _repeat(y, 22050 * 3)
        r[r > 1.0] = 1.0
        r[r < -1.0] = -1.0
        spec = librosa.stft(r, n_fft=512, hop_length=353, pad_mode="reflect")
        arrays[f"ogm_ge_spec:{clip}"] = np.log(np.abs(spec) + 1e-7).astype(np.float32)
    for clip in MEL_CLIPS:
        y, _ = librosa.load(HERE / clip, sr=16000, res_type="kaiser_best")
        mel = librosa.feature.melspectrogram(
            y=_repeat(y, 16000 * 3), sr=16000, n_fft=512, hop_length=256, n_mels=128, htk=True, norm=None,
            pad_mode="reflect",
        )
        arrays[f"mel_spec:{clip}"] = np.log(mel + 1e-6).astype(np.float32)
    y16, _ = librosa.load(HERE / KALDI_CLIPS[0], sr=16000, res_type="kaiser_best")
    arrays["kaldi_wave16k"] = np.round(np.clip(y16, -1, 1) * 32767).astype(np.int16)


def kaldi_part(arrays: dict[str, np.ndarray], versions: dict[str, str], kaldi_py: str | None) -> None:
    import torch

    kaldi: types.ModuleType  # the module loaded from kaldi_py, or torchaudio's own
    if kaldi_py:
        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # kaldi.fbank uses no other part
        spec = importlib.util.spec_from_file_location("torchaudio_kaldi", kaldi_py)
        assert spec is not None and spec.loader is not None
        kaldi = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(kaldi)
        version_py = Path(kaldi_py).resolve().parents[1] / "version.py"  # torchaudio/version.py beside it
        found = version_py.read_text().split("__version__ = ")[1].split()[0] if version_py.exists() else "?"
        versions["torchaudio"] = f"{found.strip(chr(39) + chr(34))} (compliance/kaldi.py loaded from its file)"
    else:
        import torchaudio
        import torchaudio.compliance.kaldi as torchaudio_kaldi

        kaldi = torchaudio_kaldi

        versions["torchaudio"] = torchaudio.__version__
    versions["torch"] = torch.__version__
    sys.path.insert(0, str(HERE.parents[2]))
    from dus_gym.data.convert import read_wav  # the 16-bit PCM reading only: int16 / 32768, as torchaudio.load

    def fbank(w: np.ndarray, rate: int) -> np.ndarray:
        t = torch.from_numpy(w[None].astype(np.float32))
        t = t - t.mean()
        return kaldi.fbank(t, htk_compat=True, sample_frequency=rate, use_energy=False, window_type="hanning",
                           num_mel_bins=128, dither=0.0, frame_shift=10).numpy()

    for clip in KALDI_CLIPS:
        w, rate = read_wav(HERE / clip)
        arrays[f"kaldi_fbank:{clip}"] = fbank(w, rate)
    if "kaldi_wave16k" not in arrays:
        raise SystemExit("run the librosa part first: it writes the 16 kHz waveform")
    arrays["kaldi_fbank16k"] = fbank(arrays["kaldi_wave16k"].astype(np.float32) / 32768.0, 16000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["librosa", "kaldi"])
    p.add_argument("--kaldi-py", help="torchaudio's compliance/kaldi.py, loaded from this file")
    args = p.parse_args()
    arrays = _existing()
    versions = json.loads(str(arrays.pop("versions", np.array("{}"))))
    if args.part == "librosa":
        librosa_part(arrays, versions)
    else:
        kaldi_part(arrays, versions, args.kaldi_py)
    np.savez_compressed(OUT, allow_pickle=False, versions=np.array(json.dumps(versions, sort_keys=True)), **arrays)
    print(f"wrote {OUT}: {sorted(arrays)}; {versions}")


if __name__ == "__main__":
    main()
