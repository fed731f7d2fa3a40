"""Forgiving readers for benign inputs (and, re-exported from :mod:`fastfp.answers`, for a
suspect's answers).

Inputs arrive as tensor files or a folder of PNG images, often as uint8 0..255 in either layout.
Every reader returns ``(value, notes)``: the notes say what was converted (the CLI prints them), and
anything it cannot read raises one ``ValueError`` naming the file, never a parser's traceback.
Tensor files are read by :func:`fastfp.answers.read_tensor_file`, which never unpickles code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

# the answers readers moved below the methods (what the checked party supplies); their old
# names here keep working
from fastfp.answers import (  # noqa: F401
    ANSWER_KEYS,
    INDEX_COLUMNS,
    TENSOR_FILES,
    existing_path,
    read_answers,
    read_tensor_file,
    top_k_labels,
)
from fastfp.io import open_regular

INPUT_KEYS = ("inputs", "images", "x")
# floats may leave [0, 1] by this much (rounding of a resize, say) before they are refused
RANGE_SLACK = 0.01


# --- inputs ----------------------------------------------------------------------------------

def as_float_images(x: Any, name: str = "inputs") -> tuple[torch.Tensor, list[str]]:
    """float32 NCHW images in 0..1, and the notes to print.

    uint8 images (N, C, H, W), (N, H, W, C) or (N, H, W) are divided by 255 (with a note, never
    used as 0..255); float inputs are kept as they are: in 0..1, or with negative values
    (normalised images, features) with a note; non-negative floats above 1 (pixels never divided by
    255) are refused."""
    if isinstance(x, np.ndarray):
        if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
            raise TypeError(f"{name}: expected uint8 images or floats in 0..1, got {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor or an array, got {type(x).__name__}")
    notes: list[str] = []
    if x.numel() == 0 or x.dim() < 2:
        raise ValueError(f"{name}: expected a batch of inputs (N, ...), got shape "
                         f"{tuple(x.shape)}")
    if x.dtype == torch.uint8:
        shape = tuple(x.shape)
        if x.dim() == 3:
            x = x[:, None]
            layout = "NHW"
        elif x.dim() == 4 and x.shape[1] in (1, 3):
            layout = "NCHW"
        elif x.dim() == 4 and x.shape[3] in (1, 3):
            x = x.permute(0, 3, 1, 2)
            layout = "NHWC"
        else:
            raise ValueError(f"{name}: uint8 images of shape {shape}: expected (N, C, H, W), "
                             "(N, H, W, C) with C = 1 or 3, or (N, H, W)")
        notes.append(f"{name}: uint8 images {shape} ({layout}) divided by 255 to float32 "
                     "NCHW in 0..1")
        return (x.float() / 255).contiguous(), notes
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected uint8 images or floats in 0..1, got {x.dtype}")
    x = x.detach().float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo >= -RANGE_SLACK and hi > 1 + RANGE_SLACK:  # pixels never divided by 255
        raise ValueError(f"{name}: float values in [{lo:.3g}, {hi:.3g}], expected 0..1 (it "
                         "looks like 0..255: divide by 255, or store uint8)")
    if lo < -RANGE_SLACK:  # normalised images or features that are not images: kept as given
        notes.append(f"{name}: float values in [{lo:.3g}, {hi:.3g}], not 0..1: used as given "
                     "(images belong in 0..1, with the model's normalisation in --normalize)")
    return x.contiguous(), notes


def read_inputs(path: str | os.PathLike) -> tuple[torch.Tensor, list[str]]:
    """Inputs (benign inputs, start images) from a .npy / .npz / .pt / .safetensors tensor file
    or a folder of PNG images (sorted by name), as float32 NCHW in 0..1, and the notes to
    print."""
    p = existing_path(path, "inputs")
    if p.is_dir():
        return _read_png_folder(p)
    os.close(open_regular(p, str(p)))  # a FIFO or a device is named as such, whatever its suffix
    if p.suffix.lower() not in TENSOR_FILES:
        raise ValueError(f"{p}: not a tensor file (.npy, .npz, .pt, .safetensors) or a folder of "
                         "PNG images")
    a = read_tensor_file(p, INPUT_KEYS)
    try:
        return as_float_images(a, name=str(p))
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _read_png_folder(folder: Path) -> tuple[torch.Tensor, list[str]]:
    from fastfp.io import read_png_folder

    images, notes = read_png_folder(folder)
    x, more = as_float_images(images, name=str(folder))
    return x, notes + more
