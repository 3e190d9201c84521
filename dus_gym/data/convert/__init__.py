"""Convert audio-visual data laid out as OGM-GE, MLA or BalanceBenchmark lay it
out into a feature bundle (:mod:`dus_gym.data.bundle`).

Run ``python -m dus_gym.data.convert --help``; ``--layout NAME`` (one of
:data:`LAYOUTS`) sets every option that a codebase's own loader fixes (list
format, class order, duplicate rows, audio recipe, frame choice), so that a
tree laid out as that loader reads it converts with its paths alone. The
pieces:

- **manifests** list ``(id, class)`` pairs: one file per split, or one file
  that carries the split of each row (VGGSound's CSV, BalancedAV's JSON).
  Formats: ``csv`` (``id,class``), ``class_first`` (``class,id``), ``mla``
  (``ID.EXT Class with spaces``), ``last`` (the id first, the class last),
  ``vggsound`` (``ytid,start,class,split``) and ``balancedav`` (JSON);
- **audio** (``--audio NAME=DIR``): per id ``DIR/ID.npy``, ``.pkl`` or ``.pt``
  holding a spectrogram or filterbank, or ``DIR/ID.wav`` turned into one by a
  recipe: ``mel`` (dus_gym's log-mel), ``ogm_ge`` (OGM-GE's log-magnitude
  STFT, :func:`ogm_ge_spectrogram`) or ``kaldi_fbank`` (the Kaldi filterbank of
  MLA and BalanceBenchmark, :func:`kaldi_fbank`);
- **frames** (``--frames NAME=DIR``): per id a folder ``DIR/ID/`` of images
  (or ``DIR/ID.hdf5``, BalancedAV), taken in sorted order; k frames chosen by
  a codebase's rule, resized, stacked along the channels;
- **features** (``--features NAME=DIR``): per id an array of fixed shape,
  stored as it is.

A folder may hold ``{split}`` (``audio/{split}_fbank``), or be given per split
(``--audio audio@train=DIR --audio audio@test=DIR``), for codebases that keep
train and test media apart.

Every manifest row becomes a sample unless something is wrong with it; such a
row is skipped and reported with its reason (missing file, unreadable file,
wrong shape, unknown class, duplicate id, too few frames, non-finite values),
on the terminal and in a JSON report, also when the conversion fails (an
empty split, no sample at all, ``--strict``): nothing is dropped silently.

The modules, one concern each: :mod:`.manifests` (the lists and the classes),
:mod:`.audio` (the recipes), :mod:`.frames` (which frames, read how),
:mod:`.sources` (a modality's folders and a row's array), :mod:`.report`,
:mod:`.pipeline` (:func:`convert`), :mod:`.layouts` and the command line
(``__main__``). Every name below is importable from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dus_gym.data.convert.audio import (
    AUDIO_RECIPES,
    AudioOptions,
    kaldi_fbank,
    kaldi_mel_banks,
    log_mel,
    mel_filterbank,
    ogm_ge_spectrogram,
    read_wav,
    resample,
)
from dus_gym.data.convert.frames import FRAME_RULES, IMAGE_EXTS, FrameOptions, even_frame_indices, frame_indices
from dus_gym.data.convert.layouts import CREMAD_CLASSES, KS_FBANK_NORM, LAYOUTS, Layout
from dus_gym.data.convert.manifests import (
    CLASS_LIST_FORMATS,
    CLASS_ORDERS,
    MANIFEST_FORMATS,
    MEDIA_EXTS,
    SPLITS,
    Row,
    read_class_list,
    read_manifest,
)
from dus_gym.data.convert.pipeline import convert
from dus_gym.data.convert.report import (
    ConversionFailed,
    ConversionRefused,
    ConversionReport,
    Skipped,
    report_path_for,
)
from dus_gym.data.convert.sources import AUDIO_EXTS, Loader

__all__ = [
    "AUDIO_RECIPES",
    "FRAME_RULES",
    "LAYOUTS",
    "MANIFEST_FORMATS",
    "AudioOptions",
    "ConversionFailed",
    "ConversionRefused",
    "ConversionReport",
    "FrameOptions",
    "Layout",
    "Skipped",
    "convert",
    "even_frame_indices",
    "frame_indices",
    "kaldi_fbank",
    "kaldi_mel_banks",
    "log_mel",
    "main",
    "mel_filterbank",
    "ogm_ge_spectrogram",
    "read_class_list",
    "read_manifest",
    "read_wav",
    "resample",
]

if TYPE_CHECKING:  # what the lazy `main` below is, for type checkers
    from dus_gym.data.convert.__main__ import main

# Also importable from here, as before the package: the other constants and helpers' types.
_ALSO = (AUDIO_EXTS, CLASS_LIST_FORMATS, CLASS_ORDERS, CREMAD_CLASSES, IMAGE_EXTS, KS_FBANK_NORM, MEDIA_EXTS,
         SPLITS, Loader, Row, report_path_for)


def __getattr__(name: str) -> Any:
    # The command line lives in __main__ (run by `python -m dus_gym.data.convert`). Imported lazily: were it
    # imported here, `python -m` would find it already imported and warn before running it.
    if name == "main":
        from dus_gym.data.convert.__main__ import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
