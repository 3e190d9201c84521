"""The command line of the converter: ``python -m dus_gym.data.convert OUT --manifest ... --audio ...``.

Its flags are the fields of :class:`Args` (:mod:`dus_gym.cli`); ``--layout NAME`` fills in what a
codebase's loader fixes (:data:`dus_gym.data.convert.layouts.LAYOUTS`), and a flag given explicitly wins.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dus_gym import cli
from dus_gym.data.convert.audio import AUDIO_RECIPES, AudioOptions
from dus_gym.data.convert.frames import FRAME_RULES, FrameOptions
from dus_gym.data.convert.layouts import LAYOUTS, Layout
from dus_gym.data.convert.manifests import CLASS_LIST_FORMATS, CLASS_ORDERS, MANIFEST_FORMATS, SPLITS
from dus_gym.data.convert.pipeline import convert
from dus_gym.data.convert.report import ConversionFailed

__all__ = ["Args", "main"]

PROG = "python -m dus_gym.data.convert"
DESCRIPTION = (
    "Convert an audio-visual dataset laid out as OGM-GE, MLA or BalanceBenchmark read it into a dus_gym\n"
    "feature bundle. Rows that cannot be read are skipped and reported (report.json), never dropped\n"
    "silently. --layout sets everything a codebase's loader fixes; the paths are still yours."
)
EPILOG = (
    "layouts:\n" + "".join(f"  {k} ({v.codebase} {v.dataset})\n" for k, v in LAYOUTS.items()) + "\n"
    "Example (OGM-GE CREMA-D):\n"
    "  python -m dus_gym.data.convert cremad_bundle --layout ogm_ge_cremad \\\n"
    "    --manifest train=OGM-GE_CVPR2022/data/CREMAD/train.csv \\\n"
    "    --manifest test=OGM-GE_CVPR2022/data/CREMAD/test.csv \\\n"
    "    --audio audio=CREMA-D/AudioWAV --frames visual=CREMA-D/Image-01-FPS\n"
    "Every command: docs/bundles.md"
)


def _number(kind: Callable[[str], Any], low: float, high: float | None = None, open_low: bool = False
            ) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` (``int`` or ``float``) at least ``low``
    (more than ``low`` if ``open_low``) and below ``high`` (if given)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value < low or (open_low and value == low) or (high is not None and value >= high):
            bound = f"{'>' if open_low else '>='} {low:g}" + ("" if high is None else f" and < {high:g}")
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; expected a number {bound}")
        return value

    return parse


# `type=str` on the optional text flags: the word 'none' is a value here (a class, a suffix), not None.
@dataclass
class Args:
    out: str = cli.flag(positional=True)
    """the bundle to write: a new folder, or a file ending in .npz"""
    manifest: list[str] = cli.flag(action="append", metavar="[SPLIT=]PATH")
    """a list of samples; SPLIT is train, val or test (repeat per split); without SPLIT, one list of all
    (or, for vggsound and balancedav, a list whose rows carry their split)"""
    layout: str | None = cli.flag(None, type=str, choices=list(LAYOUTS))
    """a codebase's loader for one dataset: sets the options below to what that loader does (options given
    explicitly win)"""
    manifest_format: str | None = cli.flag(None, type=str, choices=["auto", *MANIFEST_FORMATS])
    """csv: 'id,class' rows; class_first: 'class,id' rows (OGM-GE KS/AVE); mla: 'ID.EXT Class' lines;
    last: id first, class last (BalanceBenchmark KS; OGM-GE's shipped KS lists, 'id,10,class'); vggsound:
    'ytid,start,class,split'; balancedav: JSON; auto: csv for .csv, balancedav for .json, else last (default)"""
    classes: str | None = cli.flag(None, type=str)
    """class names, comma-separated (label order unless --class-order)"""
    class_list: str | None = cli.flag(None, type=str, metavar="PATH")
    """a file of class names (stat.txt); rows of other classes are skipped"""
    class_list_format: str | None = cli.flag(None, type=str, choices=list(CLASS_LIST_FORMATS))
    """csv: the first field of each row (OGM-GE, default); lines: each line (MLA); mla_ks: MLA's stat_ks.txt"""
    class_order: str | None = cli.flag(None, type=str, choices=list(CLASS_ORDERS))
    """label order: listed (as --classes gives it), sorted (Python's sorted() on the names, as OGM-GE's and
    MLA's loaders: '13' < '4'), numeric (by value when all names are integers; default without --classes),
    first_train (first appearance among training rows)"""
    duplicates: str | None = cli.flag(None, type=str, choices=["first", "last"])
    """which row of a repeated id is kept (default first; OGM-GE's AVE keeps the last)"""
    audio: list[str] = cli.flag([], action="append", metavar="NAME[@SPLIT]=DIR")
    """audio modality: DIR/ID.wav (through --audio-recipe) or DIR/ID.npy|.pkl|.pt (a 2-D spectrogram);
    DIR may hold {split}"""
    frames: list[str] = cli.flag([], action="append", metavar="NAME[@SPLIT]=DIR")
    """video modality: DIR/ID/ holds the frames of ID (jpg, png, ...), or DIR/ID.hdf5"""
    features: list[str] = cli.flag([], action="append", metavar="NAME[@SPLIT]=DIR")
    """precomputed features: DIR/ID.npy|.pkl|.pt of one fixed shape, stored as they are"""
    audio_recipe: str | None = cli.flag(None, type=str, choices=list(AUDIO_RECIPES))
    """.wav files: mel (dus_gym's log-mel, default), ogm_ge (OGM-GE's log |STFT|, 257 x 188), kaldi_fbank
    (MLA's and BalanceBenchmark's 128-bin Kaldi filterbank, 1024 frames)"""
    sample_rate: int | None = cli.flag(None, type=_number(int, 1))
    """.wav: resample to this rate first (mel 16000, ogm_ge 22050, kaldi_fbank: the file's)"""
    seconds: float | None = cli.flag(None, type=_number(float, 0, open_low=True))
    """.wav, mel and ogm_ge: tile or crop to this duration (default 3.0)"""
    n_fft: int | None = cli.flag(None, type=_number(int, 2))
    """mel, ogm_ge: STFT window (default 512)"""
    hop_length: int | None = cli.flag(None, type=_number(int, 1))
    """mel, ogm_ge: STFT hop (mel 256, ogm_ge 353)"""
    n_mels: int | None = cli.flag(None, type=_number(int, 1))
    """mel, kaldi_fbank: bands (default 128)"""
    audio_norm: list[float] | None = cli.flag(None, nargs=2, metavar=("MEAN", "SCALE"))
    """kaldi_fbank: store (fbank - MEAN) / SCALE (OGM-GE's process_audio.py: -4.503877 10.282552)"""
    audio_length: int | None = cli.flag(None, type=_number(int, 1))
    """time frames kept: kaldi_fbank (default 1024, zero-padded) and arrays (default: as they are)"""
    audio_fit: str | None = cli.flag(None, type=str, choices=["tile", "zero"])
    """arrays shorter than --audio-length: tile (repeat, default) or zero (pad)"""
    time_axis: int | None = cli.flag(None, type=int, choices=[0, 1, -1])
    """arrays: the time axis of a 2-D spectrogram (-1: F x T, default; 0: T x F, the Kaldi filterbanks of
    MLA and BalanceBenchmark)"""
    audio_layout: str = cli.flag("image", choices=["image", "sequence"])
    """store audio as 1 x F x T (image: CNN encoders) or T x F (sequence: GRU)"""
    num_frames: int | None = cli.flag(None, type=_number(int, 1))
    """frames k per clip (default 1)"""
    frame_rule: str | None = cli.flag(None, type=str, choices=list(FRAME_RULES))
    """which k frames, in sorted file order: even (default), first, segment_start (MLA, OGM-GE KS/AVE),
    segment_middle (BalanceBenchmark CREMA-D), bb (BalanceBenchmark KS/VGGSound)"""
    min_frames: int | None = cli.flag(None, type=_number(int, 1))
    """skip a clip with fewer images (as a codebase's loader drops it)"""
    frame_suffix: str | None = cli.flag(None, type=str)
    """appended to an id to name its frame folder (e.g. .mp4)"""
    frame_size: list[int] = cli.flag([112, 112], type=_number(int, 1), nargs=2, metavar=("H", "W"))
    """frame size after resizing"""
    gray: list[str] = cli.flag([], action="append", metavar="NAME")
    """read this frames modality as one channel (depth, flow); repeatable"""
    val_fraction: float = cli.flag(0.1, type=_number(float, 0.0, 1.0))
    """without val rows: share of the training samples made validation"""
    seed: int = 0
    """seed of that validation draw"""
    name: str | None = cli.flag(None, type=str)
    """dataset name in the bundle (None: the output's name)"""
    strict: bool = False
    """write no bundle if any row would be skipped"""
    progress: bool = True
    """show a progress bar (--no-progress: none)"""


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """``--help`` and flags generated from :class:`Args` (:mod:`dus_gym.cli`)."""
    return cli.parse_args(Args, argv, description=DESCRIPTION, prog=PROG, epilog=EPILOG)


def _pair(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{what}: expected NAME=PATH, got {text!r} (or NAME@SPLIT=PATH)")
    return name, value


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _manifests(args: Args) -> list[tuple[str | None, str]]:
    """``--manifest [SPLIT=]PATH`` as ``(split, path)``; a path holding ``=`` that exists is a path."""
    manifests: list[tuple[str | None, str]] = []
    for m in args.manifest:
        split, sep, path = m.partition("=")
        if sep and split not in SPLITS and not Path(m).exists():
            raise ValueError(
                f"--manifest {m!r}: unknown split {split!r}; expected SPLIT=PATH with SPLIT one of "
                f"{list(SPLITS)}, or a path alone"
            )
        manifests.append((split, path) if sep and split in SPLITS else (None, m))
    return manifests


def _frame_options(args: Args, frames: Sequence[tuple[str, str]], lay: Layout | None) -> dict[str, FrameOptions]:
    """One :class:`FrameOptions` per ``--frames`` modality: the flags, else the layout's, else the defaults."""
    frame_names = list(dict.fromkeys(n.partition("@")[0] for n, _ in frames))
    unknown_gray = [g for g in args.gray if g not in frame_names]
    if unknown_gray:
        raise ValueError(f"--gray {unknown_gray[0]!r}: not a --frames modality ({frame_names})")
    lf = lay.frames if lay else {}
    return {
        n: FrameOptions(
            _first(args.num_frames, lf.get("num_frames"), 1), (args.frame_size[0], args.frame_size[1]),
            n in args.gray, _first(args.frame_rule, lf.get("rule"), "even"),
            _first(args.min_frames, lf.get("min_frames"), 1), _first(args.frame_suffix, lf.get("suffix"), ""),
        )
        for n in frame_names
    }


def _audio_options(args: Args, lay: Layout | None) -> AudioOptions:
    """The flags, else the layout's settings (for the layout's own recipe only), else the recipe's defaults."""
    la = lay.audio if lay else {}
    recipe = _first(args.audio_recipe, la.get("recipe"), "mel")
    from_layout = recipe == la.get("recipe")  # a layout's recipe settings apply to its own recipe only
    return AudioOptions(
        sample_rate=_first(args.sample_rate, la.get("sample_rate") if from_layout else None),
        seconds=_first(args.seconds, la.get("seconds") if from_layout else None),
        n_fft=_first(args.n_fft, la.get("n_fft") if from_layout else None),
        hop_length=_first(args.hop_length, la.get("hop_length") if from_layout else None),
        n_mels=args.n_mels,
        length=args.audio_length,
        time_axis=_first(args.time_axis, la.get("time_axis"), -1),
        layout=args.audio_layout,
        recipe=recipe,
        fit=_first(args.audio_fit, "tile"),
        norm=(args.audio_norm[0], args.audio_norm[1]) if args.audio_norm else (
            la.get("norm") if from_layout else None
        ),
    )


def _classes(args: Args, lay: Layout | None) -> list[str] | None:
    """``--classes``, else the layout's fixed classes (without ``--class-list``), else None."""
    if args.classes and args.class_list:
        raise ValueError("give --classes or --class-list, not both")
    classes = args.classes.split(",") if args.classes else (
        list(lay.classes) if lay and lay.classes and not args.class_list else None
    )
    if lay and lay.class_list_format and not args.class_list and not args.classes:
        raise ValueError(
            f"--layout {args.layout}: {lay.codebase}'s loader reads its classes from a class list "
            f"({'stat.txt' if lay.codebase == 'OGM-GE' else 'stat_*.txt'}); give it with --class-list PATH"
        )
    return classes


def _run(args: Args) -> str:
    """Convert as ``args`` say; returns the report's summary."""
    lay = LAYOUTS[args.layout] if args.layout else None
    manifests = _manifests(args)
    frames = [_pair(f, "--frames") for f in args.frames]
    frame_options = _frame_options(args, frames, lay)
    audio_options = _audio_options(args, lay)
    classes = _classes(args, lay)
    report = convert(
        args.out,
        manifests,
        audio=[_pair(a, "--audio") for a in args.audio],
        frames=frames,
        features=[_pair(f, "--features") for f in args.features],
        manifest_format=_first(args.manifest_format, lay.manifest_format if lay else None, "auto"),
        classes=classes,
        audio_options=audio_options,
        frame_options=frame_options,
        val_fraction=args.val_fraction,
        seed=args.seed,
        strict=args.strict,
        progress=args.progress,
        name=args.name,
        class_list=args.class_list,
        class_list_format=_first(args.class_list_format, lay.class_list_format if lay else None, "csv"),
        class_order=_first(args.class_order, lay.class_order if lay else None),
        duplicates=_first(args.duplicates, lay.duplicates if lay else None, "first"),
        layout=args.layout,
    )
    return report.summary()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status.

    0: written; 1: no bundle written because of the data (``--strict``, no
    readable row, an empty split; the report is written beside OUT), or a
    system error (disk full...); 2: a bad option or path, printed as one
    ``error:`` line. A usage mistake (unknown option, a value of the wrong
    type) exits with status 2 from argparse, also in one line.
    """
    args = parse_args(argv)
    try:
        summary = _run(args)
    except ConversionFailed as err:
        print(err, file=sys.stderr)
        return 1
    except (
        ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
        argparse.ArgumentTypeError, ImportError,
    ) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # not a usage mistake: the machine's (disk full, permissions)
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    print(summary, file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main, PROG)
