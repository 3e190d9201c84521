"""Frames: which ``k`` of a clip's images a codebase's loader takes (:func:`frame_indices`), and a
clip's folder of images (or BalancedAV's ``.hdf5``) read into ``(k * C, H, W)``."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FRAME_RULES", "FrameOptions", "even_frame_indices", "frame_indices", "read_clip_frames"]

FRAME_RULES = ("even", "first", "segment_start", "segment_middle", "bb")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class FrameOptions:
    """How a folder of frames becomes ``(k * C, H, W)``."""

    num_frames: int = 1
    size: tuple[int, int] = (112, 112)
    """(H, W) after resizing"""
    gray: bool = False
    """one channel (depth, optical flow), else RGB"""
    rule: str = "even"
    """which frames: :func:`frame_indices`"""
    min_frames: int = 1
    """a clip with fewer images is skipped (as a codebase's loader drops it)"""
    suffix: str = ""
    """appended to the id to name its folder (OGM-GE's VGGSound folders end in ``.mp4``)"""



def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def even_frame_indices(n: int, k: int) -> np.ndarray:
    """``k`` indices into ``n`` frames, one in the middle of each of ``k`` equal
    segments (repeats when ``n < k``)."""
    return ((np.arange(k) + 0.5) * n / k).astype(np.int64)


def frame_indices(n: int, k: int, rule: str = "even") -> np.ndarray:
    """Which ``k`` of ``n`` frames (0-based, in sorted order) a rule takes; ``seg = n // k``.

    - ``even``: :func:`even_frame_indices` (dus_gym's own);
    - ``first``: the first ``k`` (OGM-GE's CREMA-D and VGGSound loaders read
      ``image_samples[i]`` for ``i < k``; fewer than ``k`` frames is an error);
    - ``segment_start``: ``i * seg`` (MLA's ``allimages[int(seg * i)]``;
      OGM-GE's KS/AVE ``frame_0000{seg * i + 1}.jpg``);
    - ``segment_middle``: ``i * seg + seg // 2`` (BalanceBenchmark's CREMA-D
      loader at test time);
    - ``bb``: ``t - 1`` with ``t = i * seg + max(seg // 2, 1)`` if ``n > 6``
      else ``t = 1`` (BalanceBenchmark's KS ``frame_0000{t}.jpg`` and VGGSound
      ``image_samples[t - 1]`` at test time).
    """
    if n < 1 or k < 1:
        raise ValueError(f"frame_indices: need n >= 1 frames and k >= 1, got n={n}, k={k}")
    seg = n // k
    i = np.arange(k)
    if rule == "even":
        return even_frame_indices(n, k)
    if rule == "first":
        if n < k:
            raise ValueError(f"frames: {n} frame(s), fewer than the {k} that rule 'first' reads")
        return i
    if rule == "segment_start":
        return i * seg
    if rule == "segment_middle":
        return i * seg + seg // 2
    if rule == "bb":
        return (i * seg + max(seg // 2, 1) - 1) if n > 6 else np.zeros(k, dtype=np.int64)
    raise ValueError(f"unknown frame rule {rule!r}; valid: {list(FRAME_RULES)}")


def _image_array(img: Any, size: tuple[int, int], gray: bool) -> np.ndarray:
    from PIL import Image

    frame = img.convert("L" if gray else "RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    a = np.asarray(frame, dtype=np.float32) / 255.0
    return a[None] if gray else a.transpose(2, 0, 1)


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading frames needs Pillow: pip install 'dus_gym[convert]'") from None
    return Image



def read_clip_frames(base: Path, opt: FrameOptions) -> np.ndarray:
    """The frames of one clip, ``(k * C, H, W)`` in [0, 1]: the folder ``base`` of images, else the file
    ``base.hdf5`` (BalancedAV).

    Raises:
        FileNotFoundError: neither exists (``missing: ...``).
        ValueError: too few images (``frames: ...``) or an unreadable one.
        ImportError: no Pillow (or no h5py for ``.hdf5``).
    """
    Image = _pillow()
    if base.is_dir():
        files = sorted((p for p in base.iterdir() if p.suffix.lower() in IMAGE_EXTS),
                       key=lambda p: _natural_key(p.name))
        if len(files) < max(opt.min_frames, 1):
            raise ValueError(
                f"frames: {base} holds {len(files)} image(s), fewer than {max(opt.min_frames, 1)}"
                + (" (--min-frames: the codebase's loader drops such a clip)" if opt.min_frames > 1 else "")
            )
        out = []
        for i in frame_indices(len(files), opt.num_frames, opt.rule):
            try:
                with Image.open(files[i]) as img:
                    out.append(_image_array(img, opt.size, opt.gray))
            except Exception as err:  # a broken image: reported as its sample's reason
                raise ValueError(f"{files[i]}: {err}") from None
        return np.concatenate(out, axis=0)
    h5 = base.with_name(base.name + ".hdf5")
    if h5.is_file():
        return _read_hdf5_frames(h5, opt, Image)
    raise FileNotFoundError(f"missing: no frame folder {base} (nor {h5.name})")


def _read_hdf5_frames(path: Path, opt: FrameOptions, Image: Any) -> np.ndarray:
    """BalancedAV: an ``.hdf5`` file whose dataset ``video`` holds encoded images."""
    try:
        import h5py
    except ImportError:
        raise ImportError("reading .hdf5 frames needs h5py: pip install 'dus_gym[convert]'") from None
    with h5py.File(path, "r") as f:
        if "video" not in f:
            raise ValueError(f"{path}: no dataset 'video' (BalancedAV keeps encoded frames there)")
        video = f["video"]
        n = len(video)
        if n < max(opt.min_frames, 1):
            raise ValueError(f"frames: {path} holds {n} frame(s), fewer than {max(opt.min_frames, 1)}")
        idx = frame_indices(n, opt.num_frames, opt.rule)
        if opt.rule == "bb":  # BalanceBenchmark's BalancedAV loader indexes video_data[t], not [t - 1]
            idx = idx + 1
        out = []
        for i in idx:
            if i >= n:
                raise ValueError(f"frames: {path} holds {n} frames; the {opt.rule!r} rule reads frame {i}")
            try:
                with Image.open(io.BytesIO(np.asarray(video[i]).tobytes())) as img:
                    out.append(_image_array(img, opt.size, opt.gray))
            except Exception as err:
                raise ValueError(f"{path}: frame {i}: {err}") from None
    return np.concatenate(out, axis=0)
