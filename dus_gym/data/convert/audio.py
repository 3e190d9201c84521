"""Audio recipes: a ``.wav`` file read as PCM, resampled as librosa does, and turned into the
spectrogram or filterbank of dus_gym (``mel``), OGM-GE (``ogm_ge``) or MLA and BalanceBenchmark
(``kaldi_fbank``), with no torchaudio or librosa needed; :class:`AudioOptions` picks one."""

from __future__ import annotations

import functools
import math
import wave
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "AUDIO_RECIPES",
    "AudioOptions",
    "kaldi_fbank",
    "kaldi_mel_banks",
    "log_mel",
    "mel_filterbank",
    "ogm_ge_spectrogram",
    "read_wav",
    "resample",
]

AUDIO_RECIPES = ("mel", "ogm_ge", "kaldi_fbank")

def _read_wav_channels(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM ``.wav`` file as float32 samples ``(n, channels)`` in [-1, 1] and its sample rate (Hz)."""
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:  # 8-bit PCM is unsigned
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise ValueError(f"{path}: {8 * width}-bit samples; expected 8, 16, 24 or 32-bit PCM")
    x = x.reshape(-1, channels)
    if len(x) == 0:
        raise ValueError(f"{path}: no samples")
    return x, rate


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM ``.wav`` file as float32 samples in [-1, 1], channels averaged, and its sample rate (Hz)."""
    x, rate = _read_wav_channels(path)
    return x.mean(axis=1), rate


# The "kaiser_best" filter of resampy (0.4), which librosa.load used by default
# before librosa 0.10: a Kaiser-windowed sinc with 50 zero crossings on each side.
_KAISER_BEST = {"num_zeros": 50, "rolloff": 0.9173473712608761, "beta": 12.984585039593508}


def _sinc_taps(frac: np.ndarray, scale: float, reach: int) -> np.ndarray:
    """Weights ``(len(frac), 2 * reach + 1)`` of input samples ``n - reach .. n + reach`` for outputs at
    ``n + frac``: ``s * h(s * |frac - d|)`` (:func:`resample`)."""
    zeros, rolloff, beta = _KAISER_BEST["num_zeros"], _KAISER_BEST["rolloff"], _KAISER_BEST["beta"]
    u = scale * np.abs(frac[:, None] - np.arange(-reach, reach + 1)[None, :])
    taper = np.i0(beta * np.sqrt(np.clip(1.0 - (u / zeros) ** 2, 0.0, None))) / np.i0(beta)
    return np.where(u < zeros, scale * rolloff * np.sinc(rolloff * u) * taper, 0.0)


@functools.lru_cache(maxsize=8)
def _polyphase_taps(orig_rate: int, new_rate: int) -> np.ndarray:
    g = math.gcd(orig_rate, new_rate)
    up = new_rate // g
    scale = min(1.0, new_rate / orig_rate)
    # Cached (lru_cache): callers must not modify the result in place.
    return _sinc_taps(np.arange(up) / up, scale, math.ceil(_KAISER_BEST["num_zeros"] / scale) + 1)


def resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of a mono waveform, as ``librosa.load(path, sr=new_rate)``
    does with ``res_type="kaiser_best"`` (resampy's filter, librosa's default before 0.10).

    Each output sample ``j`` sits at input time ``t = j * orig_rate / new_rate``
    and is ``sum_k x[k] * s * h(s * |t - k|)`` over the input samples, with
    ``s = min(1, new_rate / orig_rate)`` and ``h(u) = r sinc(r u) kaiser(u / Z)``
    for ``u < Z`` (``Z = 50`` zero crossings, roll-off ``r = 0.9173``, Kaiser
    beta 12.98). resampy reads ``h`` from a table interpolated linearly; here
    it is evaluated exactly (the two differ by about 1e-9), once per phase
    ``t - floor(t)`` (``new_rate / gcd`` phases). The output has
    ``floor(n * new / orig)`` computed samples and is zero-padded to
    ``ceil(n * new / orig)``, as librosa pads resampy's output.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"resample: expected a non-empty mono waveform, got shape {x.shape}")
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"resample: sample rates must be positive, got {orig_rate} and {new_rate}")
    if orig_rate == new_rate:
        return x.astype(np.float32)
    n_computed = int(len(x) * float(new_rate) / float(orig_rate))
    n_out = math.ceil(len(x) * new_rate / orig_rate)
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    scale = min(1.0, new_rate / orig_rate)
    reach = math.ceil(_KAISER_BEST["num_zeros"] / scale) + 1
    position = np.arange(n_computed, dtype=np.int64) * down
    base, phase = position // up, position % up
    padded = np.pad(x, (reach, reach + 1))
    y = np.zeros(n_out, dtype=np.float64)
    if up <= 4096:
        taps = _polyphase_taps(orig_rate, new_rate)
        for i in range(2 * reach + 1):  # input sample base + i - reach, for every output at once
            y[:n_computed] += taps[phase, i] * padded[base + i]
    else:  # rates without a small common period: each output's weights
        for start in range(0, n_computed, 4096):
            sl = slice(start, min(start + 4096, n_computed))
            w = _sinc_taps(phase[sl] / up, scale, reach)
            y[sl] = (w * padded[base[sl, None] + np.arange(2 * reach + 1)[None, :]]).sum(axis=1)
    return y.astype(np.float32)


@functools.lru_cache(maxsize=8)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)`` on the HTK mel scale
    (``2595 log10(1 + f / 700)``), unnormalised (peak 1), as torchaudio's
    ``melscale_fbanks(norm=None, mel_scale="htk")``."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"mel_filterbank: need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}, "
            f"sample_rate={sample_rate}"
        )
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_min, mel_max = (2595 * math.log10(1 + f / 700) for f in (f_min, f_max))
    mel = torch.linspace(mel_min, mel_max, n_mels + 2, dtype=torch.float64)
    hz = 700 * (10 ** (mel / 2595) - 1)
    lower, center, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (freqs - lower) / (center - lower)
    falling = (upper - freqs) / (upper - center)
    # Cached (lru_cache): callers must not modify the result in place.
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


def log_mel(
    samples: np.ndarray | torch.Tensor, sample_rate: int, n_fft: int = 512, hop_length: int = 256, n_mels: int = 128
) -> np.ndarray:
    """Log-mel spectrogram ``(n_mels, 1 + len // hop_length)`` of a mono waveform
    (the ``mel`` recipe, dus_gym's own).

    Power spectrum of a centred STFT (Hann window of ``n_fft`` samples) through
    :func:`mel_filterbank`, then ``log(mel + 1e-6)`` (natural log of power).
    """
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"log_mel: expected a non-empty mono waveform, got shape {tuple(x.shape)}")
    if len(x) <= n_fft // 2:  # reflect padding needs more samples than half a window
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - len(x)))
    spec = torch.stft(x, n_fft, hop_length, window=torch.hann_window(n_fft), center=True, return_complex=True)
    power = spec.abs().square()
    return torch.log(mel_filterbank(sample_rate, n_fft, n_mels) @ power + 1e-6).numpy()


def ogm_ge_spectrogram(
    samples: np.ndarray, sample_rate: int, target_rate: int = 22050, seconds: float = 3.0, n_fft: int = 512,
    hop_length: int = 353, pad_mode: str = "reflect",
) -> np.ndarray:
    """OGM-GE's CREMA-D audio (``dataset/CramedDataset.py``, ``__getitem__``):
    ``(n_fft // 2 + 1, 1 + round(seconds * target_rate) // hop_length)``, 257 x 188 by default.

    1. resample to ``target_rate`` (:func:`resample`, as ``librosa.load(sr=22050)``);
    2. repeat from the start to ``seconds`` and cut there (OGM-GE:
       ``np.tile(samples, 3)[:22050 * 3]``; the same for every clip of at least
       ``seconds / 3``, and a clip that short would give OGM-GE a shorter
       spectrogram its batches could not stack: here it is tiled further);
    3. clip to [-1, 1];
    4. ``log(|STFT| + 1e-7)``: a centred STFT, periodic Hann window of ``n_fft``,
       hop ``hop_length``, the signal padded by reflection (``librosa.stft``
       before librosa 0.10; ``pad_mode="constant"`` gives librosa >= 0.10's
       zero padding, which changes the first and last frame only).

    OGM-GE's VGGSound loader (``dataset/VGGSoundDataset.py``) is the same with
    ``target_rate=16000, seconds=5, n_fft=256, hop_length=128`` (129 x 626),
    except that it starts its 5 s at a random point of the first 5 s of the
    clip repeated to 10 s; here it starts at 0.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"ogm_ge_spectrogram: expected a non-empty mono waveform, got shape {x.shape}")
    if sample_rate != target_rate:
        x = resample(x, sample_rate, target_rate)
    x = np.clip(_fit_length(x, round(seconds * target_rate), axis=0), -1.0, 1.0)
    t = torch.from_numpy(np.ascontiguousarray(x))
    spec = torch.stft(
        t, n_fft, hop_length, window=torch.hann_window(n_fft), center=True, pad_mode=pad_mode, return_complex=True
    )
    return torch.log(spec.abs() + 1e-7).numpy()


@functools.lru_cache(maxsize=8)
def kaldi_mel_banks(num_bins: int, padded_window_size: int, sample_rate: float, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi's triangular mel filters ``(num_bins, padded_window_size // 2 + 1)``
    (``mel = 1127 ln(1 + f / 700)``, triangles equally spaced in mel between
    ``low_freq`` and ``high_freq`` (``<= 0``: that far below Nyquist), over the
    FFT bins below Nyquist; the Nyquist bin gets no weight), as
    ``torchaudio.compliance.kaldi.get_mel_banks`` computes them without VTLN
    warping: in float32, in the same order (float64 would differ by up to
    about 1e-5, which moves the log energy of a faint band by up to 5e-4)."""
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0 <= low_freq < high <= nyquist:
        raise ValueError(f"kaldi_mel_banks: need 0 <= low_freq < high_freq <= Nyquist, got {low_freq}, {high}")
    mel_low, mel_high = (1127.0 * math.log(1.0 + f / 700.0) for f in (low_freq, high))
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    mel = (1127.0 * (1.0 + sample_rate / padded_window_size * torch.arange(padded_window_size // 2) / 700.0).log())
    mel = mel.unsqueeze(0)
    banks = torch.clamp(torch.min((mel - left) / (center - left), (right - mel) / (right - center)), min=0.0)
    # Cached (lru_cache): callers must not modify the result in place.
    return torch.nn.functional.pad(banks, (0, 1))


def kaldi_fbank(
    samples: np.ndarray, sample_rate: int, num_mel_bins: int = 128, frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0, low_freq: float = 20.0, preemphasis: float = 0.97,
) -> np.ndarray:
    """Kaldi log mel filterbank ``(frames, num_mel_bins)`` of a mono waveform, as
    ``torchaudio.compliance.kaldi.fbank(w, htk_compat=True, sample_frequency=sr,
    use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0,
    frame_shift=10)`` computes it: the call of MLA's ``data/extract_fbank.py``
    and of OGM-GE's ``data/KineticSound/process_audio.py``, which
    BalanceBenchmark's KS and CREMA-D features follow. No torchaudio needed.

    Frames of ``frame_length_ms`` every ``frame_shift_ms`` (only whole frames:
    ``1 + (n - length) // shift``); per frame: minus its mean, pre-emphasis
    ``x[i] - 0.97 x[i-1]`` (``x[-1] = x[0]``), a symmetric Hann window, zeros to
    the next power of two, power spectrum, :func:`kaldi_mel_banks`, then
    ``log(max(energy, eps))`` with ``eps`` float32's machine epsilon; in
    float32, as torchaudio on a float32 waveform. A waveform shorter than one
    frame gives no frames.
    """
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    if x.ndim != 1:
        raise ValueError(f"kaldi_fbank: expected a mono waveform, got shape {tuple(x.shape)}")
    shift = int(sample_rate * frame_shift_ms * 0.001)
    length = int(sample_rate * frame_length_ms * 0.001)
    padded = 1 << (length - 1).bit_length()
    if len(x) < length:
        return np.zeros((0, num_mel_bins), dtype=np.float32)
    frames = x.unfold(0, length, shift)  # (1 + (n - length) // shift, length)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.nn.functional.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
    frames = frames - preemphasis * previous[:, :-1]
    frames = frames * torch.hann_window(length, periodic=False, dtype=frames.dtype).unsqueeze(0)
    frames = torch.nn.functional.pad(frames.unsqueeze(0), (0, padded - length), mode="constant", value=0.0)
    power = torch.fft.rfft(frames.squeeze(0)).abs().pow(2.0)
    energies = torch.mm(power, kaldi_mel_banks(num_mel_bins, padded, float(sample_rate), low_freq).T)
    return torch.max(energies, torch.tensor(torch.finfo(torch.float32).eps)).log().numpy()


def _fit_length(x: np.ndarray, length: int, axis: int, mode: str = "tile") -> np.ndarray:
    """Crop (keep the start) or extend along ``axis`` to ``length``: ``tile``
    repeats from the start (as OGM-GE tiles its waveforms), ``zero`` pads with
    zeros at the end (as the Kaldi filterbank scripts pad to 1024 frames)."""
    n = x.shape[axis]
    if n == 0:
        raise ValueError("shape: empty along time")
    if n < length:
        if mode == "zero":
            pad = [(0, 0)] * x.ndim
            pad[axis] = (0, length - n)
            return np.pad(x, pad)
        x = np.concatenate([x] * math.ceil(length / n), axis=axis)
    return np.take(x, np.arange(length), axis=axis)


@dataclass
class AudioOptions:
    """How audio becomes a fixed-shape array. ``None``: the recipe's default."""

    sample_rate: int | None = None
    """.wav: resample to this rate first (mel: 16000, ogm_ge: 22050, kaldi_fbank: the file's own)"""
    seconds: float | None = None
    """.wav, mel and ogm_ge: tile or crop the waveform to this duration (default 3.0)"""
    n_fft: int | None = None
    """mel and ogm_ge: STFT window in samples (default 512)"""
    hop_length: int | None = None
    """mel and ogm_ge: STFT hop in samples (mel 256, ogm_ge 353)"""
    n_mels: int | None = None
    """mel and kaldi_fbank: mel bands (default 128)"""
    length: int | None = None
    """time frames kept: kaldi_fbank from .wav (None: 1024, zero-padded or cut) and arrays (None: as they are)"""
    time_axis: int = -1
    """arrays: which axis of a 2-D spectrogram is time (-1: the last, ``(F, T)``; 0: ``(T, F)``)"""
    layout: str = "image"
    """``"image"``: stored ``(1, F, T)`` (CNN); ``"sequence"``: ``(T, F)`` (GRU)"""
    recipe: str = "mel"
    """.wav files: ``mel``, ``ogm_ge`` or ``kaldi_fbank`` (:data:`AUDIO_RECIPES`)"""
    fit: str = "tile"
    """arrays with ``length``: extend by ``tile`` (repeat) or ``zero`` (pad)"""
    norm: tuple[float, float] | None = None
    """kaldi_fbank: ``(mean, scale)``, stored ``(fbank - mean) / scale``"""

    def resolved(self) -> AudioOptions:
        """A copy with the recipe's defaults filled in."""
        defaults: dict[str, dict[str, Any]] = {
            "mel": {"sample_rate": 16000, "seconds": 3.0, "n_fft": 512, "hop_length": 256, "n_mels": 128},
            "ogm_ge": {"sample_rate": 22050, "seconds": 3.0, "n_fft": 512, "hop_length": 353},
            "kaldi_fbank": {"n_mels": 128},
        }
        if self.recipe not in defaults:
            raise ValueError(f"unknown audio recipe {self.recipe!r}; valid: {list(AUDIO_RECIPES)}")
        unused = {"ogm_ge": ("n_mels", "norm"), "mel": ("norm",), "kaldi_fbank": ("seconds", "n_fft", "hop_length")}
        for name in unused[self.recipe]:
            if getattr(self, name) is not None:
                raise ValueError(f"audio option {name!r} is not used by the {self.recipe!r} recipe")
        if self.layout not in ("image", "sequence"):
            raise ValueError(f"audio layout {self.layout!r}; expected 'image' or 'sequence'")
        if self.fit not in ("tile", "zero"):
            raise ValueError(f"audio fit {self.fit!r}; expected 'tile' or 'zero'")
        return replace(self, **{k: v for k, v in defaults[self.recipe].items() if getattr(self, k) is None})



def _wav_features(path: Path, opt: AudioOptions, notes: Counter[str], mod: str) -> np.ndarray:
    """A ``.wav`` file through the recipe, ``(F, T)``."""
    channels, rate = _read_wav_channels(path)
    if opt.recipe == "kaldi_fbank":
        # torchaudio.load, then `waveform - waveform.mean()` (over all channels); kaldi.fbank reads the first.
        wave_t = torch.from_numpy(np.ascontiguousarray(channels.T))
        x = (wave_t - wave_t.mean())[0].numpy()
        if opt.sample_rate is not None and rate != opt.sample_rate:
            x, rate = resample(x, rate, opt.sample_rate), opt.sample_rate
            notes[f"{mod}: resampled"] += 1
        assert opt.n_mels is not None
        frames = opt.length or 1024  # MLA's and OGM-GE's scripts: target_length = 1024
        fbank = kaldi_fbank(x, rate, opt.n_mels)
        if len(fbank) == 0:
            raise ValueError(f"shape: {path} is shorter than one 25 ms frame")
        if len(fbank) != frames:
            notes[f"{mod}: {'zero-padded' if len(fbank) < frames else 'cropped'} to {frames} frames"] += 1
            fbank = _fit_length(fbank, frames, axis=0, mode="zero")
        if opt.norm is not None:
            fbank = (fbank - opt.norm[0]) / opt.norm[1]
        return fbank.T
    x = channels.mean(axis=1)  # librosa.load(mono=True) averages the channels
    assert opt.sample_rate is not None and opt.seconds is not None and opt.n_fft and opt.hop_length
    if rate != opt.sample_rate:
        x = resample(x, rate, opt.sample_rate)
        notes[f"{mod}: resampled {rate} -> {opt.sample_rate} Hz"] += 1
    target = round(opt.seconds * opt.sample_rate)
    if len(x) != target:
        notes[f"{mod}: {'tiled' if len(x) < target else 'cropped'} to {opt.seconds:g} s"] += 1
    if opt.recipe == "ogm_ge":
        return ogm_ge_spectrogram(x, opt.sample_rate, opt.sample_rate, opt.seconds, opt.n_fft, opt.hop_length)
    assert opt.n_mels is not None
    return log_mel(_fit_length(x, target, axis=0), opt.sample_rate, opt.n_fft, opt.hop_length, opt.n_mels)
