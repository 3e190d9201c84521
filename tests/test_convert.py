"""The converter on tiny fixtures of each layout (OGM-GE, MLA, BalanceBenchmark), built on the fly."""

from __future__ import annotations

import json
import pickle
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from dus_gym.data import load_bundle, load_dataset
from dus_gym.data.bundle import load_bundle_ids
from dus_gym.data.convert import (
    AudioOptions,
    FrameOptions,
    convert,
    even_frame_indices,
    log_mel,
    main,
    mel_filterbank,
    read_manifest,
    read_wav,
)

Image = pytest.importorskip("PIL.Image")

RATE = 8000
FREQ = {"NEU": 300.0, "HAP": 1200.0, "SAD": 2800.0}  # a class-specific tone


def _ids(bundle: Path) -> list[str]:
    """The bundle's sample ids; the converter always writes them."""
    ids = load_bundle_ids(bundle)
    assert ids is not None, f"{bundle} has no ids"
    return [str(i) for i in ids]


def _write_wav(path: Path, freq: float, seconds: float = 0.3, width: int = 2, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = {1: 127, 2: 32767, 3: 2**23 - 1, 4: 2**31 - 1}[width]
    ints = np.round(x * scale).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    else:
        raw = b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return x


def _write_frames(folder: Path, n: int, rgb: tuple[int, int, int], ext: str = ".jpg") -> None:
    """``n`` frames whose brightness rises with the frame number: frame i is ``rgb * (i + 1) / n``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        color = tuple(int(c * (i + 1) / n) for c in rgb)
        Image.new("RGB", (12, 10), color).save(folder / f"{i + 1:06d}{ext}")


def _cremad(root: Path) -> Path:
    """OGM-GE's CREMA-D layout: train.csv / test.csv ('id,label'), AudioWAV/ID.wav, Image-01-FPS/ID/*.jpg.
    Defects: a missing wav, a broken frame, an unknown class, a duplicated row."""
    classes = list(FREQ)
    colors = {"NEU": (250, 0, 0), "HAP": (0, 250, 0), "SAD": (0, 0, 250)}
    rows: dict[str, list[str]] = {"train": [], "test": []}
    for i in range(24):
        c = classes[i % 3]
        sid = f"10{i:02d}_DFA_{c}_XX"
        rows["train" if i < 18 else "test"].append(f"{sid},{c}")
        if i != 4:
            _write_wav(root / "AudioWAV" / f"{sid}.wav", FREQ[c])
        _write_frames(root / "Image-01-FPS" / sid, 5, colors[c])
    (root / "Image-01-FPS" / "1007_DFA_HAP_XX" / "000002.jpg").write_bytes(b"not a jpeg")
    rows["train"] += ["1001_DFA_HAP_XX,HAP", "1099_DFA_ANG_XX,ANG"]
    for split, lines in rows.items():
        # OGM-GE's lists start with a byte-order mark.
        (root / f"{split}.csv").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_ogm_ge_cremad_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _cremad(tmp_path / "CREMA-D")
    out = tmp_path / "cremad_bundle"
    code = main([
        str(out), "--manifest", f"train={root / 'train.csv'}", "--manifest", f"test={root / 'test.csv'}",
        "--classes", "NEU,HAP,SAD", "--audio", f"audio={root / 'AudioWAV'}",
        "--frames", f"visual={root / 'Image-01-FPS'}", "--num-frames", "2", "--frame-size", "8", "8",
        "--sample-rate", str(RATE), "--seconds", "0.5", "--n-fft", "128", "--hop-length", "64", "--n-mels", "16",
        "--val-fraction", "0.2", "--no-progress",
    ])
    assert code == 0
    err = capsys.readouterr().err
    assert "kept 22 of 26 samples" in err and "skipped 4" in err

    data = load_bundle(out)
    assert data.modality_names == ["audio", "visual"] and data.class_names == ["NEU", "HAP", "SAD"]
    # Waveform tiled to 0.5 s = 4000 samples -> 1 + 4000 // 64 STFT frames.
    assert data.shapes() == {"audio": (1, 16, 63), "visual": (6, 8, 8)}
    ids = _ids(out)
    assert len(ids) == 22 and "1004_DFA_HAP_XX" not in ids and "1007_DFA_HAP_XX" not in ids
    labels = data.labels.numpy()
    assert [data.class_names[y] for y in labels] == [i.split("_")[2] for i in ids]
    assert data.split is not None
    split = data.split.numpy()
    assert [ids[k] for k in np.flatnonzero(split == 2)] == [f"10{i}_DFA_{c}_XX" for i, c in
                                                             zip(range(18, 24), ["NEU", "HAP", "SAD"] * 2)]
    assert np.sum(split == 1) > 0 and np.sum(split == 0) > np.sum(split == 1)

    # The log-mel spectrogram peaks in a higher band for a higher tone.
    audio = data.modalities["audio"].numpy()
    peak = {c: np.argmax(audio[labels == k, 0].mean(axis=(0, 2))) for k, c in enumerate(data.class_names)}
    assert peak["NEU"] < peak["HAP"] < peak["SAD"]
    # Frames 2 and 4 of 5 (the middles of two equal segments), in RGB order, scaled to [0, 1].
    visual = data.modalities["visual"].numpy()
    neu = visual[labels == 0]
    assert np.allclose(neu[:, 0].mean(), 250 * 2 / 5 / 255, atol=0.03)
    assert np.allclose(neu[:, 3].mean(), 250 * 4 / 5 / 255, atol=0.03)
    assert np.abs(neu[:, [1, 2, 4, 5]]).max() < 0.05

    report = json.loads((out / "report.json").read_text())
    reasons = {(s["id"], s["modality"]): s["reason"] for s in report["skipped"]}
    assert reasons[("1004_DFA_HAP_XX", "audio")].startswith("missing: no ")
    assert reasons[("1007_DFA_HAP_XX", "visual")].startswith("unreadable: ")
    assert "000002.jpg" in reasons[("1007_DFA_HAP_XX", "visual")]
    assert reasons[("1099_DFA_ANG_XX", None)].startswith("unknown class: 'ANG'")
    assert reasons[("1001_DFA_HAP_XX", None)].startswith("duplicate id: first listed at ")
    assert report["kept"] == 22 and report["rows"] == 26

    # The bundle drives the env as it is.
    from dus_gym.envs import DUSEnv

    env = DUSEnv(
        dataset=f"bundle:{out}", n_steps=1, iterations_per_step=2, base_batch=8, device="cpu",
        run_config={"probe_steps": 5},
    )
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(env.action_space.sample())
    assert truncated and not terminated and set(info["test"]["branch_accuracy"]) == {"audio", "visual"}


def test_mla_layout_npy_spectrograms_gray_frames_npz(tmp_path: Path) -> None:
    """MLA's 'ID.EXT Class' lists, .npy spectrograms of varying length (F x T), one-channel frames, .npz out."""
    root = tmp_path / "mla"
    rng = np.random.default_rng(0)
    specs = {}
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i in range(15):
        sid = f"clip{i:02d}"
        c = ["Sad", "Happy Face"][i % 2]  # a class name with a space: MLA takes the rest of the line
        lines[["train", "train", "train", "val", "test"][i % 5]].append(f"{sid}.flv {c}")
        spec = rng.normal(size=(10, 12 + i)).astype(np.float32)
        if i == 6:
            spec = rng.normal(size=(2, 10, 12)).astype(np.float32)  # not a 2-D spectrogram
        specs[sid] = spec
        (root / "audio").mkdir(parents=True, exist_ok=True)
        np.save(root / "audio" / f"{sid}.npy", spec)
        _write_frames(root / "depth" / sid, 3, (200, 200, 200), ext=".png")
    for split, ls in lines.items():
        (root / f"{split}.txt").write_text("\n".join(ls) + "\n")
    out = tmp_path / "mla.npz"
    report = convert(
        out, [(s, root / f"{s}.txt") for s in lines], audio=[("audio", root / "audio")],
        frames=[("depth", root / "depth")], manifest_format="mla",
        audio_options=AudioOptions(length=16), frame_options={"depth": FrameOptions(1, (6, 6), gray=True)},
        progress=False,
    )
    assert report.kept == 14 and [(s.id, s.modality) for s in report.skipped] == [("clip06", "audio")]
    assert report.skipped[0].reason.startswith("shape: ")
    assert out.with_suffix(".report.json").is_file()
    data = load_bundle(out)
    assert data.class_names == ["Happy Face", "Sad"]
    assert data.shapes() == {"audio": (1, 10, 16), "depth": (1, 6, 6)}
    ids = _ids(out)
    a = data.modalities["audio"].numpy()
    short, long = a[ids.index("clip00"), 0], a[ids.index("clip09"), 0]
    assert np.array_equal(short[:, :12], specs["clip00"]) and np.array_equal(short[:, 12:], specs["clip00"][:, :4])
    assert np.array_equal(long, specs["clip09"][:, :16])  # cropped
    assert data.split is not None and sorted(set(data.split.tolist())) == [0, 1, 2]
    # Middle frame of three, gray 200 -> 200 / 255.
    assert np.allclose(data.modalities["depth"].numpy(), 200 * 2 / 3 / 255, atol=1 / 255)


def test_balancebenchmark_label_last_pkl_pt_sequences(tmp_path: Path) -> None:
    """Label-last lists as BalanceBenchmark's Kinetics-Sounds (one list, no split), fbank .pkl and .pt
    (T x F), stored as sequences; RGB frames with fewer frames than asked for; a missing frame folder."""
    root = tmp_path / "ks"
    rng = np.random.default_rng(1)
    lines = []
    fbank = {}
    for i in range(9):
        sid = f"yt-{i:03d}_000030"
        lines.append(f"train/{sid}.mp4 {i} 10 {['playing_guitar', 'dog_barking', 'rain'][i % 3]}")
        fb = rng.normal(size=(20, 4)).astype(np.float32)  # T x F
        fbank[sid] = fb
        (root / "fbank" / "train").mkdir(parents=True, exist_ok=True)
        if i % 2:
            with open(root / "fbank" / "train" / f"{sid}.pkl", "wb") as f:
                pickle.dump(fb, f)
        else:
            torch.save(torch.from_numpy(fb), root / "fbank" / "train" / f"{sid}.pt")
        if i != 5:
            _write_frames(root / "frames" / "train" / sid, 2, (10, 100, 200))
    (root / "ks_list.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "ks_bundle"
    report = convert(
        out, [(None, root / "ks_list.txt")], audio=[("audio", root / "fbank")], frames=[("visual", root / "frames")],
        audio_options=AudioOptions(time_axis=0, layout="sequence"),
        frame_options={"visual": FrameOptions(3, (4, 4))}, progress=False,
    )
    assert report.kept == 8 and report.skipped[0].id == "train/yt-005_000030"
    assert report.skipped[0].modality == "visual" and report.skipped[0].reason.startswith("missing: no frame folder")
    data = load_bundle(out)
    assert data.split is None  # one list: runs draw their split from a seed
    assert data.class_names == ["dog_barking", "playing_guitar", "rain"]
    assert data.shapes() == {"audio": (20, 4), "visual": (9, 4, 4)}
    ids = _ids(out)
    assert np.array_equal(data.modalities["audio"].numpy()[ids.index("train/yt-001_000030")], fbank["yt-001_000030"])
    assert np.array_equal(data.modalities["audio"].numpy()[ids.index("train/yt-002_000030")], fbank["yt-002_000030"])
    # 3 frames from 2: indices 0, 1, 1.
    v = data.modalities["visual"].numpy()[0]
    assert np.allclose(v[[0, 3, 6], 0, 0], [5 / 255, 10 / 255, 10 / 255], atol=0.02)
    assert len(load_dataset(f"bundle:{out}")) == 8


def test_strict_refuses_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _cremad(tmp_path / "CREMA-D")
    out = tmp_path / "b"
    code = main([
        str(out), "--manifest", f"train={root / 'train.csv'}", "--manifest", f"test={root / 'test.csv'}",
        "--audio", f"audio={root / 'AudioWAV'}", "--frames", f"visual={root / 'Image-01-FPS'}",
        "--sample-rate", str(RATE), "--n-mels", "8", "--frame-size", "4", "4", "--strict", "--no-progress",
    ])
    assert code == 1 and not out.exists()
    assert "strict: 3 rows would be skipped" in capsys.readouterr().err  # no --classes: ANG is a class


def test_other_sample_rate_is_resampled_and_noted(tmp_path: Path) -> None:
    """8 kHz files with the mel recipe at 16 kHz (and 22.05 kHz): resampled, each counted in the report."""
    root = _cremad(tmp_path / "CREMA-D")
    for rate, frames in ((16000, 1 + 16000 // 256), (22050, 1 + 22050 // 256)):
        report = convert(
            tmp_path / f"b{rate}", [(None, root / "test.csv")], audio=[("audio", root / "AudioWAV")],
            frames=[("visual", root / "Image-01-FPS")], audio_options=AudioOptions(sample_rate=rate, n_mels=8,
                                                                                 seconds=1.0),
            frame_options={"visual": FrameOptions(1, (4, 4))}, progress=False,
        )
        assert report.kept == 6 and report.modalities["audio"] == [1, 8, frames]
        assert report.notes[f"audio: resampled 8000 -> {rate} Hz"] == 6
        assert f"note: 6 x audio: resampled 8000 -> {rate} Hz" in report.summary()


def test_help_and_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--manifest", "--manifest-format", "--audio", "--frames", "--features", "--num-frames", "--strict"):
        assert flag in text
    (tmp_path / "l.csv").write_text("a,x\nb,y\n")
    (tmp_path / "d").mkdir()
    assert main([str(tmp_path / "o"), "--manifest", f"train={tmp_path / 'l.csv'}", "--manifest",
                 str(tmp_path / "l.csv"), "--audio", f"a={tmp_path / 'd'}", "--features", f"b={tmp_path / 'd'}"]) == 2
    assert "either all with a split" in capsys.readouterr().err
    assert main([str(tmp_path / "o"), "--manifest", str(tmp_path / "l.csv"), "--audio", f"a={tmp_path / 'nope'}",
                 "--features", f"b={tmp_path / 'd'}"]) == 2
    assert "modality 'a': folder" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("")
    assert main([str(tmp_path / "o"), "--manifest", str(tmp_path / "l.csv"), "--audio", f"a={tmp_path / 'd'}",
                 "--features", f"b={tmp_path / 'd'}"]) == 2
    assert "exists; choose a new path" in capsys.readouterr().err


def test_manifest_formats(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,label\nx1,A\n\nx2,B\n")
    assert [(r.id, r.label) for r in read_manifest(tmp_path / "a.csv")] == [("x1", "A"), ("x2", "B")]
    (tmp_path / "b.txt").write_text("x1.mp4 Playing guitar\n# comment\nx2.wav B\n")
    rows = read_manifest(tmp_path / "b.txt", "mla")
    assert [(r.id, r.label) for r in rows] == [("x1", "Playing guitar"), ("x2", "B")]
    (tmp_path / "c.txt").write_text("dir/x1.mp4,0,10,A\nx2.flv 1 10 B\n")
    rows = read_manifest(tmp_path / "c.txt", split="test")
    assert [(r.id, r.label, r.split) for r in rows] == [("dir/x1", "A", "test"), ("x2", "B", "test")]
    # The old docs' own example: a class name with a space would lose its first word; lines whose
    # numbers of fields differ are refused instead.
    (tmp_path / "e.txt").write_text("train/-0Mje_000030.mp4 0 10 playing guitar\ntrain/-1ab_000010.mp4 0 10 singing\n")
    with pytest.raises(ValueError, match=r"e.txt: lines have different numbers of fields \(5 at .*e.txt:1, 4 at "):
        read_manifest(tmp_path / "e.txt")
    (tmp_path / "f.txt").write_text("ANG,1001_DFA_ANG_XX\nNEU,1002_DFA_NEU_XX\n")  # OGM-GE KS/AVE: class first
    assert [(r.id, r.label) for r in read_manifest(tmp_path / "f.txt", "class_first")] == [
        ("1001_DFA_ANG_XX", "ANG"), ("1002_DFA_NEU_XX", "NEU")]
    (tmp_path / "v.csv").write_text('---g-f_I2yQ,1,people marching,test\n-0a,30,"male speech, man speaking",train\n')
    assert [(r.id, r.label, r.split) for r in read_manifest(tmp_path / "v.csv", "vggsound")] == [
        ("---g-f_I2yQ_1", "people marching", "test"), ("-0a_30", "male speech, man speaking", "train")]
    with pytest.raises(ValueError, match="carries the split of every row; give it without SPLIT="):
        read_manifest(tmp_path / "v.csv", "vggsound", split="train")
    (tmp_path / "d.txt").write_text("x1 A\nlonely\n")
    with pytest.raises(ValueError, match=r"d.txt:2: expected the id first and the class last, got 'lonely'"):
        read_manifest(tmp_path / "d.txt")
    with pytest.raises(ValueError, match=r"unknown manifest format 'tsv'"):
        read_manifest(tmp_path / "d.txt", "tsv")


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_read_wav_each_pcm_width(tmp_path: Path, width: int) -> None:
    x = _write_wav(tmp_path / "t.wav", 440.0, seconds=0.01, width=width)
    y, rate = read_wav(tmp_path / "t.wav")
    assert rate == RATE and y.dtype == np.float32 and np.allclose(y, x, atol=2.0 / 127)


def test_mel_filterbank_and_log_mel() -> None:
    fb = mel_filterbank(16000, 512, 40)
    assert fb.shape == (40, 257) and float(fb.min()) == 0.0 and float(fb.max()) <= 1.0
    centers = fb.argmax(dim=1)
    assert torch.all(centers[1:] >= centers[:-1])  # bands rise in frequency
    t = np.arange(16000) / 16000
    spec = log_mel(np.sin(2 * np.pi * 1000 * t), 16000, 512, 256, 40)
    assert spec.shape == (40, 1 + 16000 // 256)
    band = int(spec.mean(axis=1).argmax())
    # The 1000 Hz tone lands in the band whose centre (bin * 16000 / 512 Hz) is nearest 1000 Hz.
    assert abs(int(centers[band]) * 16000 / 512 - 1000) < 100
    assert list(even_frame_indices(10, 3)) == [1, 5, 8] and list(even_frame_indices(2, 3)) == [0, 1, 1]
