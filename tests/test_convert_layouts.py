"""The converter against the codebases' own layouts and audio recipes.

Each layout test builds, in a temporary folder, a tiny tree laid out exactly
as one codebase's loader reads it (file names, list formats, frame names as
its preprocessing scripts write them; docs/bundles.md cites each loader), runs
the command that docs/bundles.md gives for it, checks what the loader would
have read (ids, labels, which frames, audio orientation), and plays one
short episode on the bundle. The audio is real speech: Free Spoken Digit
Dataset recordings (tests/data/fsdd_convert, CC BY-SA 4.0), one digit per class.

The recipe tests compare the converter's audio with what the codebases'
libraries compute (librosa, torchaudio's Kaldi filterbank), stored in
tests/data/fsdd_convert/references.npz by its make_references.py.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tolerances import spectral_excess

from dus_gym.data import load_bundle
from dus_gym.data.bundle import load_bundle_ids
from dus_gym.data.convert import (
    KS_FBANK_NORM,
    ConversionFailed,
    frame_indices,
    kaldi_fbank,
    log_mel,
    main,
    ogm_ge_spectrogram,
    read_class_list,
    read_wav,
    resample,
)

Image = pytest.importorskip("PIL.Image")

FSDD = Path(__file__).parent / "data" / "fsdd_convert"
SPEAKERS = ("george", "jackson", "lucas", "nicolas")  # the first three train, the last tests
REFERENCES = FSDD / "references.npz"


def _ids(bundle: Path) -> list[str]:
    """The bundle's sample ids; the converter always writes them."""
    ids = load_bundle_ids(bundle)
    assert ids is not None, f"{bundle} has no ids"
    return [str(i) for i in ids]


def _wav(digit: int, speaker: str) -> Path:
    return FSDD / f"{digit}_{speaker}_0.wav"


def _fbank(digit: int, speaker: str, frames: int = 1024, norm: bool = False) -> np.ndarray:
    """What the Kaldi filterbank scripts save for a recording: (frames, 128), time first, zero-padded to 1024
    frames (cut to ``frames`` here to keep the tests small), optionally normalised as process_audio.py."""
    x, rate = read_wav(_wav(digit, speaker))
    w = torch.from_numpy(x)
    fb = kaldi_fbank((w - w.mean()).numpy(), rate)
    fb = np.pad(fb, ((0, 1024 - len(fb)), (0, 0)))[:frames]
    return ((fb - KS_FBANK_NORM[0]) / KS_FBANK_NORM[1]).astype(np.float32) if norm else fb


def _frames(folder: Path, names: list[str], cls: int) -> None:
    """Frame i of a clip: red 25 * (i + 1) (which frame), green 40 * class, blue 100."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (10, 8), (25 * (i + 1), 40 * cls, 100)).save(folder / name)


def _chosen(visual: np.ndarray) -> list[int]:
    """Which frames (their index i) a stored (3k, H, W) sample holds, read back from the red channel."""
    return [round(float(visual[3 * j, 0, 0]) * 255 / 25) - 1 for j in range(visual.shape[0] // 3)]


def _episode(bundle: Path) -> dict[str, Any]:
    """One tiny episode of the DUS heuristic on the bundle (the small CNN on spectrograms and frames); its test
    metrics. On full-size spectrograms (257 x 188 and more) it takes several seconds: those are slow tests."""
    from dus_gym.envs import DUSEnv
    from dus_gym.policies import make_policy

    env = DUSEnv(dataset=f"bundle:{bundle}", n_steps=2, iterations_per_step=2, base_batch=4, device="cpu",
                 run_config={"probe_steps": 3})
    policy = make_policy("dus_h", env)
    obs, _ = env.reset(seed=0)
    done = False
    info: dict[str, Any] = {}
    while not done:
        obs, _, terminated, truncated, info = env.step(policy.predict(obs)[0])
        done = terminated or truncated
    assert truncated and not terminated
    return info["test"]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main([*argv, "--no-progress", "--frame-size", "8", "8"])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def _csv(path: Path, lines: list[str], bom: bool = False, crlf: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    end = "\r\n" if crlf else "\n"
    path.write_text(("\ufeff" if bom else "") + end.join(lines) + end, encoding="utf-8", newline="")
    return path


CREMAD = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
OGM_FRAMES = [f"{30 * i:05d}.jpg" for i in range(4)]  # video_preprocessing.py: '{count:05d}.jpg', one per second
KS_FRAMES = [f"frame_0000{t}.jpg" for t in range(1, 8)]  # what the KS/AVE loaders open: 'frame_0000' + str(t)


def _cremad_ids(classes: tuple[str, ...] = CREMAD[:3]) -> list[tuple[str, str, int, str, str]]:
    """(id, class, digit, speaker, split): one clip per class and speaker, CREMA-D's id pattern."""
    out = []
    for s, speaker in enumerate(SPEAKERS):
        for d, c in enumerate(classes):
            out.append((f"10{s}{d}_DFA_{c}_XX", c, d, speaker, "test" if speaker == "nicolas" else "train"))
    return out


# -- OGM-GE ----------------------------------------------------------------------


def _tree_cremad(tmp_path: Path) -> tuple[Path, Path, list[tuple[str, str, int, str, str]]]:
    """CREMA-D as OGM-GE prepares it (and BalanceBenchmark reads it): OGM-GE_CVPR2022/data/CREMAD/
    {train,test}.csv ('id,class', CRLF; a byte-order mark too, as other exports have), CREMA-D/AudioWAV/ID.wav,
    CREMA-D/Image-01-FPS/ID/00000.jpg, 00030.jpg, ... (video_preprocessing.py)."""
    repo, data = tmp_path / "OGM-GE_CVPR2022" / "data" / "CREMAD", tmp_path / "CREMA-D"
    clips = _cremad_ids()
    for sid, _, d, speaker, _ in clips:
        (data / "AudioWAV").mkdir(parents=True, exist_ok=True)
        shutil.copy(_wav(d, speaker), data / "AudioWAV" / f"{sid}.wav")
        _frames(data / "Image-01-FPS" / sid, OGM_FRAMES, d)
    for split in ("train", "test"):
        _csv(repo / f"{split}.csv", [f"{sid},{c}" for sid, c, *_, s in clips if s == split], bom=True, crlf=True)
    return repo, data, clips


def _ogm_ge_cremad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """OGM-GE's CREMA-D: the ogm_ge recipe; the first frame."""
    repo, data, clips = _tree_cremad(tmp_path)
    out = tmp_path / "cremad_ogm"
    err = _run([
        str(out), "--layout", "ogm_ge_cremad",
        "--manifest", f"train={repo / 'train.csv'}", "--manifest", f"test={repo / 'test.csv'}",
        "--audio", f"audio={data / 'AudioWAV'}", "--frames", f"visual={data / 'Image-01-FPS'}",
        "--val-fraction", "0.34",
    ], capsys)
    assert "kept 12 of 12 samples" in err and "note: 12 x audio: resampled 8000 -> 22050 Hz" in err
    data_ = load_bundle(out)
    assert data_.class_names == list(CREMAD)  # OGM-GE's class_dict order, all six
    assert data_.shapes() == {"audio": (1, 257, 188), "visual": (3, 8, 8)}
    ids = _ids(out)
    sid, _, d, speaker, _ = clips[4]
    x, rate = read_wav(_wav(d, speaker))
    np.testing.assert_array_equal(data_.modalities["audio"].numpy()[ids.index(sid), 0], ogm_ge_spectrogram(x, rate))
    assert all(_chosen(v) == [0] for v in data_.modalities["visual"].numpy())  # image_samples[0]
    assert data_.split is not None and sorted(np.bincount(data_.split.numpy())) == [3, 3, 6]
    return out


def test_ogm_ge_cremad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _ogm_ge_cremad(tmp_path, capsys)


@pytest.mark.slow
def test_ogm_ge_cremad_episode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert set(_episode(_ogm_ge_cremad(tmp_path, capsys))["branch_accuracy"]) == {"audio", "visual"}


def _ogm_ge_av(tmp_path: Path, dataset: str) -> tuple[Path, list[str]]:
    """OGM-GE's AVDataset tree (KS, AVE): stat.txt, my_{train,test}.txt ('class,id'), audio_spec/ID.pkl
    (the Kaldi filterbank of process_audio.py, pickled), visual/ID/frame_0000{t}.jpg (7 frames)."""
    root = tmp_path / "data" / dataset
    classes = ["playing guitar", "dog barking", "rain"]
    _csv(root / "stat.txt", ["rain", "playing guitar", "dog barking"])  # the loader sorts them
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for s, speaker in enumerate(SPEAKERS):
        for d, c in enumerate(classes):
            sid = f"yt{s}{d}-clip"
            lines["test" if speaker == "nicolas" else "train"].append(f"{c},{sid}")
            (root / "audio_spec").mkdir(parents=True, exist_ok=True)
            with open(root / "audio_spec" / f"{sid}.pkl", "wb") as f:
                pickle.dump(_fbank(d, speaker, 64, norm=True), f)  # (T, 128); the real ones have 1024 frames
            _frames(root / "visual" / sid, KS_FRAMES, d)
    for split, ls in lines.items():
        _csv(root / f"my_{split}.txt", ls)
    cmd = [
        "--class-list", str(root / "stat.txt"),
        "--manifest", f"train={root / 'my_train.txt'}", "--manifest", f"test={root / 'my_test.txt'}",
        "--audio", f"audio={root / 'audio_spec'}", "--frames", f"visual={root / 'visual'}", "--val-fraction", "0.34",
    ]
    return root, cmd


def test_ogm_ge_ks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, cmd = _ogm_ge_av(tmp_path, "KineticSound")
    out = tmp_path / "ks_ogm"
    _run([str(out), "--layout", "ogm_ge_ks", *cmd], capsys)
    data = load_bundle(out)
    assert data.class_names == ["dog barking", "playing guitar", "rain"]  # sorted(stat.txt), as the loader
    ids = _ids(out)
    assert [data.class_names[y] for y in data.labels.numpy()][:3] == ["playing guitar", "dog barking", "rain"]
    assert ids[:3] == ["yt00-clip", "yt01-clip", "yt02-clip"]
    # The filterbank is time x frequency: stored (1, F, T), not tiled.
    with open(root / "audio_spec" / "yt01-clip.pkl", "rb") as f:
        fb = pickle.load(f)
    np.testing.assert_array_equal(data.modalities["audio"].numpy()[1, 0], fb.T)
    assert data.shapes()["audio"] == (1, 128, 64)
    # 7 frames, 3 taken: frame_0000{seg * i + 1}.jpg with seg = 2.
    assert all(_chosen(v) == [0, 2, 4] for v in data.modalities["visual"].numpy())
    _episode(out)


def test_ogm_ge_ks_lists_as_the_repository_ships_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # OGM-GE's data/KineticSound/my_train.txt rows are 'id,10,class' with class numbers
    # ('--4-0ihtnBU_000058_000068,10,4'), while its dataset.py reads 'class,id'.
    root, cmd = _ogm_ge_av(tmp_path, "KineticSound")
    number = {"playing guitar": "4", "dog barking": "13", "rain": "27"}
    for split in ("train", "test"):
        rows = [line.split(",") for line in (root / f"my_{split}.txt").read_text().splitlines()]
        _csv(root / f"my_{split}.txt", [f"{sid},10,{number[c]}" for c, sid in rows])
    _csv(root / "stat.txt", ["27", "4", "13"])  # its classes are the numbers the lists hold
    code = main([str(tmp_path / "refused"), "--layout", "ogm_ge_ks", *cmd, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "is an 'id,N,class' row" in err and "give --manifest-format last" in err
    out = tmp_path / "ks"
    _run([str(out), "--layout", "ogm_ge_ks", "--manifest-format", "last", *cmd], capsys)
    data = load_bundle(out)
    # The loader's sorted() orders class names as strings: '13' < '27' < '4'.
    assert data.class_names == ["13", "27", "4"]
    assert [data.class_names[y] for y in data.labels.numpy()][:3] == ["4", "13", "27"]
    assert _ids(out)[:3] == ["yt00-clip", "yt01-clip", "yt02-clip"]


def test_class_orders_of_numbered_classes() -> None:
    from dus_gym.data.convert.manifests import Row, _class_order

    rows = [Row(f"s{i}", c, "train", "") for i, c in enumerate(["27", "4", "13", "4"])]
    assert _class_order(rows, "sorted") == ["13", "27", "4"]  # Python's sorted(), as OGM-GE's and MLA's loaders
    assert _class_order(rows, "numeric") == ["4", "13", "27"]  # the default without a layout
    assert _class_order(rows, "first_train") == ["27", "4", "13"]
    assert _class_order([Row("s", "b", None, ""), Row("t", "10", None, "")], "numeric") == ["10", "b"]


def test_ogm_ge_ave_keeps_the_last_row_of_a_repeated_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, cmd = _ogm_ge_av(tmp_path, "AVE")
    lines = (root / "my_train.txt").read_text().splitlines()
    _csv(root / "my_train.txt", [*lines[:2], "rain,yt00-clip", *lines[2:]])  # yt00-clip again, now 'rain'
    out = tmp_path / "ave_ogm"
    _run([str(out), "--layout", "ogm_ge_ave", *cmd], capsys)
    ids = _ids(out)
    data = load_bundle(out)
    # OGM-GE deletes the earlier entry and appends the repeated one (dataset.py, 'AVE, delete repeated labels').
    assert ids[:3] == ["yt01-clip", "yt00-clip", "yt02-clip"] and ids.count("yt00-clip") == 1
    assert data.class_names[int(data.labels[1])] == "rain"
    report = json.loads((out / "report.json").read_text())
    assert report["layout"] == "ogm_ge_ave"
    assert [(s["id"], s["reason"].split(":")[0]) for s in report["skipped"]] == [("yt00-clip", "duplicate id")]
    assert "which is kept (--duplicates last)" in report["skipped"][0]["reason"]


VGG_CLASSES = ["people marching", "male speech, man speaking", "dog barking"]


def _tree_vggsound(tmp_path: Path, codebase: str = "ogm_ge") -> Path:
    """vggsound.csv ('ytid,start,class,split', a class with a comma quoted) and per-split roots. OGM-GE:
    VGGsound/{split}-audios/{split}-set/ID.wav (mp4_to_wav.py) and VGGsound/{split}-videos/{split}-set-img/
    Image-01-FPS/ID.mp4/ (video_preprocessing.py); BalanceBenchmark: vgg/audio_{split}/ID.npy (F x T) and
    vgg/video_{split}/ID/. Clip -v02Xq_2 has three frames: both loaders drop it."""
    rows = []
    for s, speaker in enumerate(SPEAKERS):
        split = "test" if speaker == "nicolas" else "train"
        for d, c in enumerate(VGG_CLASSES):
            ytid, start = f"-v{s}{d}Xq", 10 * s + d
            sid = f"{ytid}_{start}"
            rows.append(f'{ytid},{start},"{c}",{split}')
            names = [*OGM_FRAMES, "00120.jpg"] if (s, d) != (0, 2) else OGM_FRAMES[:3]
            if codebase == "ogm_ge":
                audio = tmp_path / "VGGsound" / f"{split}-audios" / f"{split}-set"
                audio.mkdir(parents=True, exist_ok=True)
                shutil.copy(_wav(d, speaker), audio / f"{sid}.wav")
                _frames(tmp_path / "VGGsound" / f"{split}-videos" / f"{split}-set-img" / "Image-01-FPS" / f"{sid}.mp4",
                        names, d)
            else:
                (tmp_path / "vgg" / f"audio_{split}").mkdir(parents=True, exist_ok=True)
                np.save(tmp_path / "vgg" / f"audio_{split}" / f"{sid}.npy", _fbank(d, speaker, 24).T)
                _frames(tmp_path / "vgg" / f"video_{split}" / sid, names, d)
    return _csv(tmp_path / "vggsound.csv", rows)


def _ogm_ge_vggsound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """OGM-GE's VGGSound: the ogm_ge recipe at 16 kHz, 5 s, n_fft 256, hop 128; the first three frames; a
    clip of three frames or fewer is dropped, as the loader drops it."""
    csv_path = _tree_vggsound(tmp_path)
    root = tmp_path / "VGGsound"
    classes = VGG_CLASSES
    out = tmp_path / "vgg_ogm"
    err = _run([
        str(out), "--layout", "ogm_ge_vggsound", "--manifest", str(csv_path),
        "--audio", f"audio@train={root / 'train-audios' / 'train-set'}",
        "--audio", f"audio@test={root / 'test-audios' / 'test-set'}",
        "--frames", f"visual@train={root / 'train-videos' / 'train-set-img' / 'Image-01-FPS'}",
        "--frames", f"visual@test={root / 'test-videos' / 'test-set-img' / 'Image-01-FPS'}",
        "--val-fraction", "0.34",
    ], capsys)
    assert "kept 11 of 12 samples" in err
    data = load_bundle(out)
    assert data.class_names == classes  # first appearance among training rows
    assert data.shapes() == {"audio": (1, 129, 626), "visual": (9, 8, 8)}
    assert all(_chosen(v) == [0, 1, 2] for v in data.modalities["visual"].numpy())
    report = json.loads((out / "report.json").read_text())
    (skipped,) = report["skipped"]
    assert skipped["id"] == "-v02Xq_2" and skipped["reason"].startswith("frames: ") and "fewer than 4" in skipped[
        "reason"]
    x, rate = read_wav(_wav(1, "jackson"))
    ids = _ids(out)
    np.testing.assert_array_equal(
        data.modalities["audio"].numpy()[ids.index("-v11Xq_11"), 0],
        ogm_ge_spectrogram(x, rate, target_rate=16000, seconds=5.0, n_fft=256, hop_length=128),
    )
    return out


def test_ogm_ge_vggsound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _ogm_ge_vggsound(tmp_path, capsys)


@pytest.mark.slow
def test_ogm_ge_vggsound_episode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _episode(_ogm_ge_vggsound(tmp_path, capsys))


# -- MLA -------------------------------------------------------------------------


def _mla_tree(tmp_path: Path, dataset: str) -> tuple[Path, Path, list[tuple[str, str, int, str, str]]]:
    """MLA's tree: data/my_{train,test}_X.txt ('ID.flv Class' / 'ID.mp4 Class'), data/stat_X.txt in the MLA
    repository; DATA/audio/{train,test}/ID.wav (gen_cre_txt.py copies them there) and {train,test}_fbank/ID.npy
    (extract_fbank.py: the Kaldi filterbank, 1024 x 128, time first; cut to 64 x 128 here, so that the
    episode's CNN stays fast); DATA/visual/{train,test}_imgs/Image-01-FPS/ID/00000.jpg..."""
    repo = tmp_path / "MLA" / "data"
    data = tmp_path / ("CREMA-D" if dataset == "CREMA-D" else "k400/kinsound")
    names = {"Neutral": 0, "Happy": 1, "Sad": 2} if dataset == "CREMA-D" else {"playing guitar": 0, "rain": 1,
                                                                                 "tap dancing": 2}
    ext = ".flv" if dataset == "CREMA-D" else ".mp4"
    clips = [(f"10{s}{d}_DFA_{c[:3].upper()}_XX", c, d, speaker, "test" if speaker == "nicolas" else "train")
             for s, speaker in enumerate(SPEAKERS) for c, d in names.items()]
    for sid, _, d, speaker, split in clips:
        (data / "audio" / split).mkdir(parents=True, exist_ok=True)
        (data / "audio" / f"{split}_fbank").mkdir(parents=True, exist_ok=True)
        shutil.copy(_wav(d, speaker), data / "audio" / split / f"{sid}.wav")
        np.save(data / "audio" / f"{split}_fbank" / f"{sid}.npy", _fbank(d, speaker, 64))
        _frames(data / "visual" / f"{split}_imgs" / "Image-01-FPS" / sid, [f"{30 * i:05d}.jpg" for i in range(7)], d)
    tag = "cre" if dataset == "CREMA-D" else "ks"
    for split in ("train", "test"):
        _csv(repo / f"my_{split}_{tag}.txt", [f"{sid}{ext} {c}" for sid, c, *_, s in clips if s == split])
    if tag == "cre":
        _csv(repo / "stat_cre.txt", ["Sad", "Happy", "Neutral"])
    else:  # stat_ks.txt: the loader keeps the first of the three ' >'-separated parts of a line
        _csv(repo / "stat_ks.txt", ["Kinetics-Sounds classes", *[f"{c} > kinetics > 1" for c in names]])
    return repo, data, clips


@pytest.mark.parametrize("dataset", ["CREMA-D", "Kinetics-Sounds"])
def test_mla(tmp_path: Path, capsys: pytest.CaptureFixture[str], dataset: str) -> None:
    repo, data, clips = _mla_tree(tmp_path, dataset)
    tag, layout = ("cre", "mla_cremad") if dataset == "CREMA-D" else ("ks", "mla_ks")
    common = [
        "--layout", layout, "--class-list", str(repo / f"stat_{tag}.txt"),
        "--manifest", f"train={repo / f'my_train_{tag}.txt'}", "--manifest", f"test={repo / f'my_test_{tag}.txt'}",
        "--frames", f"visual={data / 'visual' / '{split}_imgs' / 'Image-01-FPS'}", "--val-fraction", "0.34",
    ]
    out = tmp_path / "mla_fbank"
    _run([str(out), *common, "--audio", f"audio={data / 'audio' / '{split}_fbank'}"], capsys)
    bundle = load_bundle(out)
    assert bundle.class_names == sorted({c for _, c, *_ in clips})  # sorted(stat), as AVDataset
    assert bundle.shapes() == {"audio": (1, 128, 64), "visual": (9, 8, 8)}  # 64 x 128 read as time x frequency
    ids = _ids(out)
    sid, _, _, _, split = clips[-1]
    fb = np.load(data / "audio" / f"{split}_fbank" / f"{sid}.npy")
    np.testing.assert_array_equal(bundle.modalities["audio"].numpy()[ids.index(sid), 0], fb.T)
    assert all(_chosen(v) == [0, 2, 4] for v in bundle.modalities["visual"].numpy())  # allimages[int(seg * i)]
    # The same bundle from the .wav files through the kaldi_fbank recipe (what extract_fbank.py computes),
    # cut to the same 64 frames.
    out_wav = tmp_path / "mla_wav"
    _run([str(out_wav), *common, "--audio", f"audio={data / 'audio' / '{split}'}", "--audio-length", "64"], capsys)
    np.testing.assert_array_equal(load_bundle(out_wav).modalities["audio"].numpy(), bundle.modalities["audio"].numpy())
    _episode(out)


def test_mla_layout_with_one_folder_reports_every_test_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    """The failure of issue 1: MLA's per-split folders given as one (the train folder): every test row is
    missing; the command fails naming the split, why, and the report, which lists every skipped row."""
    repo, data, clips = _mla_tree(tmp_path, "CREMA-D")
    out = tmp_path / "mla_one_folder"
    code = main([
        str(out), "--layout", "mla_cremad", "--class-list", str(repo / "stat_cre.txt"),
        "--manifest", f"train={repo / 'my_train_cre.txt'}", "--manifest", f"test={repo / 'my_test_cre.txt'}",
        "--audio", f"audio={data / 'audio' / 'train_fbank'}",
        "--frames", f"visual={data / 'visual' / 'train_imgs' / 'Image-01-FPS'}", "--no-progress",
    ])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert "split 'test' is empty" in err and "its 3 rows were all skipped (3 x audio: missing)" in err
    assert "NAME@test=DIR" in err and f"every row and its reason: {out}.report.json" in err
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["written"] is False and "split 'test' is empty" in report["error"]
    test_ids = [sid for sid, *_, s in clips if s == "test"]
    assert [s["id"] for s in report["skipped"]] == test_ids
    assert all(s["split"] == "test" and s["reason"].startswith("missing: no ") for s in report["skipped"])
    # The right command writes the bundle and removes that report.
    _run([
        str(out), "--layout", "mla_cremad", "--class-list", str(repo / "stat_cre.txt"),
        "--manifest", f"train={repo / 'my_train_cre.txt'}", "--manifest", f"test={repo / 'my_test_cre.txt'}",
        "--audio", f"audio={data / 'audio' / '{split}_fbank'}",
        "--frames", f"visual={data / 'visual' / '{split}_imgs' / 'Image-01-FPS'}", "--val-fraction", "0.34",
    ], capsys)
    assert (out / "report.json").is_file() and not Path(f"{out}.report.json").exists()


# -- BalanceBenchmark ------------------------------------------------------------


def test_bb_cremad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """BalanceBenchmark's CREMA-D: train/test lists as OGM-GE's ('id,class'), audio_path/ID.pt (the KS
    filterbank recipe saved with torch.save, time first), visual_path/ID/ with at least fps = 2 frames, the
    middle of each of two segments."""
    lists, data = tmp_path / "lists", tmp_path / "CREMA-D"
    clips = _cremad_ids()
    (data / "audio_pt").mkdir(parents=True)
    for sid, _, d, speaker, _ in clips:
        torch.save(torch.from_numpy(_fbank(d, speaker, 48, norm=True)), data / "audio_pt" / f"{sid}.pt")
        _frames(data / "Image-01-FPS" / sid, [f"{30 * i:05d}.jpg" for i in range(7 if sid != "1011_DFA_HAP_XX" else 1)],
                d)
    for split in ("train", "test"):
        _csv(lists / f"{split}.csv", [f"{sid},{c}" for sid, c, *_, s in clips if s == split])
    out = tmp_path / "cremad_bb"
    err = _run([
        str(out), "--layout", "bb_cremad",
        "--manifest", f"train={lists / 'train.csv'}", "--manifest", f"test={lists / 'test.csv'}",
        "--audio", f"audio={data / 'audio_pt'}", "--frames", f"visual={data / 'Image-01-FPS'}",
        "--val-fraction", "0.34",
    ], capsys)
    assert "kept 11 of 12 samples" in err  # one clip has 1 frame, fewer than fps = 2: BalanceBenchmark drops it
    bundle = load_bundle(out)
    assert bundle.class_names == list(CREMAD) and bundle.shapes() == {"audio": (1, 128, 48), "visual": (6, 8, 8)}
    assert all(_chosen(v) == [1, 4] for v in bundle.modalities["visual"].numpy())  # i * seg + seg // 2, seg = 3
    _episode(out)


def test_bb_ks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """BalanceBenchmark's KS: per-split lists of 'name ... label' (the label a number, the last field),
    audio_path_{train,test}/name.npy (process_audio.py's normalised filterbank), visual_path_{train,test}/name/
    frame_0000{t}.jpg; more than three frames; t = i * seg + max(seg // 2, 1) for more than six frames, else 1."""
    root = _tree_bb_ks(tmp_path)
    out = tmp_path / "ks_bb"
    _run([
        str(out), "--layout", "bb_ks",
        "--manifest", f"train={root / 'ks_train.txt'}", "--manifest", f"test={root / 'ks_test.txt'}",
        "--audio", f"audio@train={root / 'train_fbank'}", "--audio", f"audio@test={root / 'test_fbank'}",
        "--frames", f"visual@train={root / 'train_frames'}", "--frames", f"visual@test={root / 'test_frames'}",
        "--val-fraction", "0.34",
    ], capsys)
    bundle = load_bundle(out)
    assert bundle.class_names == ["0", "1", "2"] and bundle.shapes()["audio"] == (1, 128, 40)
    ids = _ids(out)
    chosen = {i: _chosen(v) for i, v in zip(ids, bundle.modalities["visual"].numpy())}
    assert chosen["yt11_000030_000040"] == [0, 0, 0]  # five frames: t = 1 three times
    assert all(c == [0, 2, 4] for i, c in chosen.items() if i != "yt11_000030_000040")  # t = 1, 3, 5
    _episode(out)


def _tree_bb_ks(tmp_path: Path) -> Path:
    """ks/ks_{train,test}.txt ('name 10 label'), ks/{train,test}_fbank/name.npy, ks/{train,test}_frames/name/."""
    root = tmp_path / "ks"
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for s, speaker in enumerate(SPEAKERS):
        split = "test" if speaker == "nicolas" else "train"
        for d in range(3):
            name = f"yt{s}{d}_000030_000040"
            lines[split].append(f"{name} 10 {d}")
            (root / f"{split}_fbank").mkdir(parents=True, exist_ok=True)
            np.save(root / f"{split}_fbank" / f"{name}.npy", _fbank(d, speaker, 40, norm=True))
            _frames(root / f"{split}_frames" / name, KS_FRAMES if (s, d) != (1, 1) else KS_FRAMES[:5], d)
    for split, ls in lines.items():
        _csv(root / f"ks_{split}.txt", ls)
    return root


def test_bb_balancedav_json_and_hdf5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """BalanceBenchmark's BalancedAV: one JSON ({'database': {id: {'subset', 'label'}}, 'labels'}), frames
    as encoded JPEGs in visual_path/ID.hdf5 ('video'), audio_path/ID.pkl."""
    pytest.importorskip("h5py")
    root = _tree_balancedav(tmp_path)
    out = tmp_path / "balanced_bb"
    _run([
        str(out), "--layout", "bb_balancedav", "--manifest", str(root / "annotation.json"),
        "--audio", f"audio={root / 'audio'}", "--frames", f"visual={root / 'visual'}", "--val-fraction", "0.34",
    ], capsys)
    bundle = load_bundle(out)
    assert bundle.class_names == ["violin", "piano", "drum"]
    assert bundle.shapes() == {"audio": (1, 128, 32), "visual": (9, 8, 8)}
    assert all(_chosen(v) == [1, 3, 5] for v in bundle.modalities["visual"].numpy())  # video_data[t], t = 1, 3, 5


def _tree_balancedav(tmp_path: Path) -> Path:
    """balanced/annotation.json, balanced/audio/ID.pkl (F x T), balanced/visual/ID.hdf5 (8 JPEG frames)."""
    h5py = pytest.importorskip("h5py")
    root = tmp_path / "balanced"
    (root / "visual").mkdir(parents=True)
    (root / "audio").mkdir()
    labels = ["violin", "piano", "drum"]
    database = {}
    for s, speaker in enumerate(SPEAKERS):
        for d in range(3):
            key = f"clip{s}{d}"
            database[key] = {"subset": "testing" if speaker == "nicolas" else "training", "label": labels[d]}
            with open(root / "audio" / f"{key}.pkl", "wb") as f:
                pickle.dump(_fbank(d, speaker, 32).T, f)  # stored F x T here: the default --time-axis -1
            with h5py.File(root / "visual" / f"{key}.hdf5", "w") as f:
                video = f.create_dataset("video", (8,), dtype=h5py.vlen_dtype(np.uint8))
                for i in range(8):
                    buf = io.BytesIO()
                    Image.new("RGB", (10, 8), (25 * (i + 1), 40 * d, 100)).save(buf, format="JPEG")
                    video[i] = np.frombuffer(buf.getvalue(), dtype=np.uint8)
    (root / "annotation.json").write_text(json.dumps({"database": database, "labels": labels}))
    return root


def test_bb_vggsound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """BalanceBenchmark's VGGSound: OGM-GE's CSV, per-split .npy spectrograms stored as they are, frame
    folders named by id; sorted frames, t - 1 with t = 1 for six frames or fewer."""
    csv_path = _tree_vggsound(tmp_path, "bb")
    out = tmp_path / "vgg_bb"
    err = _run([
        str(out), "--layout", "bb_vggsound", "--manifest", str(csv_path),
        "--audio", f"audio@train={tmp_path / 'vgg' / 'audio_train'}",
        "--audio", f"audio@test={tmp_path / 'vgg' / 'audio_test'}",
        "--frames", f"visual@train={tmp_path / 'vgg' / 'video_train'}",
        "--frames", f"visual@test={tmp_path / 'vgg' / 'video_test'}", "--val-fraction", "0.34",
    ], capsys)
    assert "kept 11 of 12 samples" in err
    bundle = load_bundle(out)
    assert bundle.class_names == VGG_CLASSES and bundle.shapes() == {"audio": (1, 128, 24), "visual": (9, 8, 8)}
    assert all(_chosen(v) == [0, 0, 0] for v in bundle.modalities["visual"].numpy())  # 5 frames: t = 1
    _episode(out)


DOCS = Path(__file__).parents[1] / "docs" / "bundles.md"


def _documented_commands() -> dict[str, list[str]]:
    """Every `python -m dus_gym.data.convert OUT --layout NAME ...` of docs/bundles.md, by layout."""
    import shlex

    text = DOCS.read_text(encoding="utf-8")
    commands: dict[str, list[str]] = {}
    for block in text.split("```bash")[1:]:
        for command in block.split("```")[0].replace("\\\n", " ").splitlines():
            if not command.startswith("python -m dus_gym.data.convert ") or "--layout" not in command:
                continue
            words = shlex.split(command)
            commands.setdefault(words[words.index("--layout") + 1], words[3:])
    return commands


def test_documented_commands_convert_their_layouts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each layout's command in docs/bundles.md, run as written (paths relative to a folder holding the
    miniature trees the other tests build, at the documented paths), writes a bundle."""
    commands = _documented_commands()
    documented = {"ogm_ge_cremad", "ogm_ge_ks", "ogm_ge_ave", "ogm_ge_vggsound", "mla_cremad", "mla_ks",
                  "bb_cremad", "bb_ks", "bb_vggsound", "bb_balancedav"}
    assert set(commands) == documented
    _tree_cremad(tmp_path)
    _ogm_ge_av(tmp_path, "KineticSound")
    _ogm_ge_av(tmp_path, "AVE")
    _tree_vggsound(tmp_path, "ogm_ge")
    _tree_vggsound(tmp_path, "bb")
    _mla_tree(tmp_path, "CREMA-D")
    _mla_tree(tmp_path, "Kinetics-Sounds")
    _tree_bb_ks(tmp_path)
    try:
        _tree_balancedav(tmp_path)
    except pytest.skip.Exception:
        commands.pop("bb_balancedav")  # needs h5py (the convert extra)
    monkeypatch.chdir(tmp_path)
    for layout, argv in commands.items():
        err = _run([*argv, "--val-fraction", "0.34"], capsys)
        assert "kept " in err, (layout, err)
        assert len(load_bundle(tmp_path / argv[0])) >= 11, layout


# -- failure modes and frame rules -------------------------------------------------


def test_every_failure_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No readable row, and --strict: exit status 1, no bundle, OUT.report.json listing every skipped row."""
    repo, data, clips = _mla_tree(tmp_path, "CREMA-D")
    base = ["--layout", "mla_cremad", "--class-list", str(repo / "stat_cre.txt"),
            "--manifest", f"train={repo / 'my_train_cre.txt'}", "--manifest", f"test={repo / 'my_test_cre.txt'}",
            "--frames", f"visual={data / 'visual' / '{split}_imgs' / 'Image-01-FPS'}", "--no-progress"]
    empty = tmp_path / "empty_audio"
    empty.mkdir()
    out = tmp_path / "none"
    assert main([str(out), *base, "--audio", f"audio={empty}"]) == 1
    assert "no sample could be read" in capsys.readouterr().err
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert len(report["skipped"]) == len(clips) and report["kept"] == 0 and not report["written"]
    (repo / "my_test_cre.txt").write_text((repo / "my_test_cre.txt").read_text() + "9999_DFA_ANG_XX.flv Anger\n")
    out = tmp_path / "strict.npz"
    assert main([str(out), *base, "--audio", f"audio={data / 'audio' / '{split}_fbank'}", "--strict"]) == 1
    assert "strict: 1 rows would be skipped; no bundle written" in capsys.readouterr().err
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert not out.exists() and [s["reason"].split(":")[0] for s in report["skipped"]] == ["unknown class"]
    with pytest.raises(ConversionFailed) as info:
        from dus_gym.data.convert import convert

        convert(tmp_path / "api", [("train", repo / "my_train_cre.txt")], audio=[("audio", empty)],
                frames=[("visual", data / "visual" / "train_imgs" / "Image-01-FPS")], manifest_format="mla",
                progress=False)
    assert info.value.report_path == tmp_path / "api.report.json" and info.value.report.kept == 0


def test_frame_rules_as_the_codebases_index() -> None:
    assert list(frame_indices(7, 3, "segment_start")) == [0, 2, 4]  # MLA int(seg * i); OGM-GE KS seg * i + 1
    assert list(frame_indices(7, 2, "segment_middle")) == [1, 4]  # BalanceBenchmark CREMA-D at test time
    assert list(frame_indices(10, 3, "bb")) == [0, 3, 6]  # t = i * 3 + max(3 // 2, 1) = 1, 4, 7: frame_0000{t}
    assert list(frame_indices(6, 3, "bb")) == [0, 0, 0]  # six frames or fewer: t = 1
    assert list(frame_indices(4, 3, "first")) == [0, 1, 2]
    with pytest.raises(ValueError, match="fewer than the 3 that rule 'first' reads"):
        frame_indices(2, 3, "first")
    assert list(frame_indices(10, 3, "even")) == [1, 5, 8]


def test_class_lists(tmp_path: Path) -> None:
    (tmp_path / "stat.csv").write_text("\ufeffNEU\r\nHAP\r\nSAD")  # OGM-GE's data/CREMAD/stat.csv
    assert read_class_list(tmp_path / "stat.csv") == ["NEU", "HAP", "SAD"]
    (tmp_path / "stat_ks.txt").write_text("header\nplaying guitar > a > b\nrain > a > b\nbroken > a\n")
    assert read_class_list(tmp_path / "stat_ks.txt", "mla_ks") == ["playing guitar", "rain"]
    (tmp_path / "stat_cre.txt").write_text("Anger\nDisgust, mild\n\n")
    assert read_class_list(tmp_path / "stat_cre.txt", "lines") == ["Anger", "Disgust, mild"]


def test_layout_needs_its_class_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "l.txt").write_text("a.mp4 x\n")
    (tmp_path / "d").mkdir()
    assert main([str(tmp_path / "o"), "--layout", "mla_ks", "--manifest", str(tmp_path / "l.txt"),
                 "--audio", f"a={tmp_path / 'd'}", "--frames", f"b={tmp_path / 'd'}"]) == 2
    assert "MLA's loader reads its classes from a class list" in capsys.readouterr().err


# -- audio recipes on real recordings ------------------------------------------------


def _fsdd_manifest(tmp_path: Path) -> Path:
    """All 24 recordings: class = the digit, the last speaker tests."""
    return _csv(tmp_path / "fsdd.csv", [
        f"{p.stem},{p.stem.split('_')[0]}" for p in sorted(FSDD.glob("*.wav"))
    ])


def _fsdd_features(tmp_path: Path) -> Path:
    feats = tmp_path / "feats"
    feats.mkdir()
    for p in FSDD.glob("*.wav"):
        np.save(feats / f"{p.stem}.npy", np.full(3, float(p.stem[0]), dtype=np.float32))
    return feats


@pytest.mark.parametrize(
    ("recipe", "shape", "compute"),
    [
        ("mel", (1, 128, 188), lambda x, r: log_mel(np.resize(resample(x, r, 16000), 48000), 16000)),
        ("ogm_ge", (1, 257, 188), lambda x, r: ogm_ge_spectrogram(x, r)),
        ("kaldi_fbank", (1, 128, 1024),
         lambda x, r: np.pad(kaldi_fbank(x - x.mean(), r), ((0, 1024 - len(kaldi_fbank(x, r))), (0, 0))).T),
    ],
)
def test_fsdd_through_each_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], recipe: str, shape: tuple[int, ...],
    compute: Callable[[np.ndarray, int], np.ndarray],
) -> None:
    out = tmp_path / f"fsdd_{recipe}.npz"
    err = _run([str(out), "--manifest", str(_fsdd_manifest(tmp_path)), "--audio", f"audio={FSDD}",
                "--features", f"digit={_fsdd_features(tmp_path)}", "--audio-recipe", recipe], capsys)
    assert "kept 24 of 24 samples" in err
    bundle = load_bundle(out)
    assert bundle.shapes()["audio"] == shape and bundle.class_names == [str(d) for d in range(6)]
    ids = _ids(out)
    for clip in ("2_lucas_0", "5_nicolas_0"):
        x, rate = read_wav(FSDD / f"{clip}.wav")
        np.testing.assert_allclose(bundle.modalities["audio"].numpy()[ids.index(clip), 0], compute(x, rate),
                                   atol=1e-5)


def _references() -> dict[str, np.ndarray]:
    with np.load(REFERENCES) as f:
        return {k: f[k] for k in f.files}


def _kaldi_clips() -> list[tuple[str, np.ndarray, int]]:
    """The six 8 kHz recordings of the references and the 16 kHz one: (reference key, waveform, rate), each
    waveform minus its mean as make_references.py gave it to torchaudio (``w - w.mean()`` in torch)."""
    ref = _references()
    clips = [(key, *read_wav(FSDD / key.split(":")[1])) for key in ref if key.startswith("kaldi_fbank:")]
    clips.append(("kaldi_fbank16k", ref["kaldi_wave16k"].astype(np.float32) / 32768.0, 16000))
    centred = []
    for key, x, rate in clips:
        w = torch.from_numpy(x)
        centred.append((key, (w - w.mean()).numpy(), rate))
    return centred


def _kaldi_n_fft(rate: int) -> int:
    """Kaldi's FFT size: the 25 ms frame rounded up to a power of two (256 at 8 kHz, 512 at 16 kHz)."""
    return 1 << (int(rate * 0.025) - 1).bit_length()


def test_kaldi_fbank_equals_torchaudio() -> None:
    """torchaudio.compliance.kaldi.fbank with MLA's and OGM-GE's arguments, on 8 kHz recordings and one at
    16 kHz (CREMA-D's rate): the same numbers, within what float32 FFTs summing in another order on another
    machine can differ by (tests/tolerances.py). Worst ratio to that tolerance 0.13 (log energies up to 1.6e-4
    apart, all in bands 1e-7 of their frame's energy); a change of recipe gives at least 140
    (test_the_kaldi_tolerance_still_catches_a_change_of_recipe)."""
    ref = _references()
    clips = _kaldi_clips()
    assert len(clips) == 7
    for key, w, rate in clips:
        got = kaldi_fbank(w, rate)
        assert got.shape == ref[key].shape, key
        assert spectral_excess(got, ref[key], band_axis=1, n_fft=_kaldi_n_fft(rate)) <= 1, key


# A change of the filterbank's recipe and the factor by which it must exceed the tolerance on every clip
# (measured minima over the seven: 142, 6330, 1.4e4, 288).
KALDI_CHANGES: dict[str, tuple[Callable[[np.ndarray, int], np.ndarray], float]] = {
    "pre-emphasis 0.96": (lambda w, rate: kaldi_fbank(w, rate, preemphasis=0.96), 50),
    "low_freq 25 Hz": (lambda w, rate: kaldi_fbank(w, rate, low_freq=25.0), 1000),
    "log10 instead of ln": (lambda w, rate: kaldi_fbank(w, rate) / np.log(10), 1000),
    "one sample later": (lambda w, rate: kaldi_fbank(w[1:], rate), 100),
}


@pytest.mark.parametrize("change", list(KALDI_CHANGES))
def test_the_kaldi_tolerance_still_catches_a_change_of_recipe(change: str) -> None:
    recipe, at_least = KALDI_CHANGES[change]
    ref = _references()
    for key, w, rate in _kaldi_clips():
        got = recipe(w, rate)
        frames = min(len(got), len(ref[key]))  # one sample later may lose the last frame
        assert spectral_excess(got[:frames], ref[key][:frames], band_axis=1, n_fft=_kaldi_n_fft(rate)) > at_least


def test_kaldi_fbank_against_the_kaldi_algorithm_in_float64() -> None:
    """An independent transcription of Kaldi's filterbank (float64, loops over frames), on a 16 kHz tone in
    noise: agrees within float32's FFT rounding (tests/tolerances.py; its two-machine budget covers our float32
    filter weights, 1e-5 from float64 ones): worst ratio 0.07 (log energies up to 5e-4 apart, in the faintest
    bands), where pre-emphasis 0.96 gives 92."""
    rng = np.random.default_rng(0)
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) + 0.05 * rng.normal(size=16000)
    x = x - x.mean()
    length, shift, padded, bins = 400, 160, 512, 128
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    edges = np.linspace(mel(20.0), mel(8000.0), bins + 2)
    fft_mel = mel(np.arange(padded // 2) * 16000 / padded)
    banks = np.zeros((bins, padded // 2 + 1))
    for b in range(bins):
        left, center, right = edges[b : b + 3]
        banks[b, : padded // 2] = np.clip(np.minimum((fft_mel - left) / (center - left),
                                                     (right - fft_mel) / (right - center)), 0, None)
    rows = []
    for start in range(0, len(x) - length + 1, shift):
        frame = x[start : start + length] - x[start : start + length].mean()
        frame = frame - 0.97 * np.concatenate([[frame[0]], frame[:-1]])
        frame = frame * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / (length - 1)))
        power = np.abs(np.fft.rfft(frame, padded)) ** 2
        rows.append(np.log(np.maximum(banks @ power, np.finfo(np.float32).eps)))
    assert spectral_excess(kaldi_fbank(x, 16000), np.array(rows), band_axis=1, n_fft=padded) <= 1
    assert spectral_excess(kaldi_fbank(x, 16000, preemphasis=0.96), np.array(rows), band_axis=1, n_fft=padded) > 20


def test_ogm_ge_recipe_against_librosa() -> None:
    """librosa.load(sr=22050, res_type='kaiser_best') and OGM-GE's STFT on a recording: the resampled
    waveform to 1e-6, the spectrogram within what float32 FFTs on two machines can differ by
    (tests/tolerances.py; as power, twice the log magnitude): worst ratio 0.014. Zero padding in place of
    reflection, which changes only the first and last frame, exceeds it 7,100-fold."""
    ref = _references()
    x, rate = read_wav(FSDD / "3_jackson_0.wav")
    # resample() works in float64 (elementwise, in a fixed order: the same on any machine); resampy summed its
    # 103 taps in float32, about sqrt(103) * eps32 * 0.29 (the peak) = 3.5e-7 off: 1.6e-7 measured.
    np.testing.assert_allclose(resample(x, rate, 22050), ref["ogm_ge_wave:3_jackson_0.wav"], atol=1e-6)
    got, want = ogm_ge_spectrogram(x, rate), ref["ogm_ge_spec:3_jackson_0.wav"]
    assert got.shape == want.shape == (257, 188)
    assert spectral_excess(2 * got, 2 * want, band_axis=0, n_fft=512) <= 1
    zero_padded = ogm_ge_spectrogram(x, rate, pad_mode="constant")
    assert spectral_excess(2 * zero_padded, 2 * want, band_axis=0, n_fft=512) > 1000


def test_mel_recipe_against_librosa() -> None:
    """dus_gym's own mel recipe is librosa's melspectrogram(htk=True, norm=None) of the waveform resampled to
    16 kHz and repeated to 3 s, log(+1e-6): within what float32 FFTs on two machines can differ by
    (tests/tolerances.py): worst ratio 0.008, where mel bands 0.6% higher (the filterbank of 16,100 Hz)
    exceed it 1,350-fold."""
    ref = _references()["mel_spec:5_lucas_0.wav"]
    x, rate = read_wav(FSDD / "5_lucas_0.wav")
    y = np.resize(resample(x, rate, 16000), 48000)  # np.resize repeats from the start
    assert spectral_excess(log_mel(y, 16000), ref, band_axis=0, n_fft=512) <= 1
    assert spectral_excess(log_mel(y, 16100), ref, band_axis=0, n_fft=512) > 1000


def test_resample_matches_its_description() -> None:
    """Length floor(n * ratio) computed, zero-padded to ceil (librosa's fix_length); a tone stays a tone."""
    t = np.arange(8001) / 8000
    y = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), 8000, 22050)
    assert len(y) == int(np.ceil(8001 * 22050 / 8000)) and y[-1] == 0.0
    inner = np.arange(2000, 20000)
    np.testing.assert_allclose(y[inner], np.sin(2 * np.pi * 440 * inner / 22050), atol=1e-3)
    down = resample(np.sin(2 * np.pi * 440 * np.arange(44100) / 44100).astype(np.float32), 44100, 16000)
    np.testing.assert_allclose(down[1000:15000], np.sin(2 * np.pi * 440 * np.arange(1000, 15000) / 16000), atol=1e-3)


def test_wav_reading_matches_16bit_pcm_scaling(tmp_path: Path) -> None:
    """torchaudio.load and librosa (soundfile) scale 16-bit PCM by 1 / 32768, as read_wav."""
    with wave.open(str(tmp_path / "t.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.array([-32768, 0, 16384, 32767], dtype="<i2").tobytes())
    x, rate = read_wav(tmp_path / "t.wav")
    assert rate == 16000 and list(x) == [-1.0, 0.0, 0.5, 32767 / 32768]
