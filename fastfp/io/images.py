"""PNG files: 8-bit images out of (B, C, H, W) tensors in 0..1, and 8-bit images back in.

Pillow is imported when an image is read or written, not on ``import fastfp``.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch

from fastfp import _validate

PNG_MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode of an 8-bit PNG


def png_bytes(images: torch.Tensor) -> list[bytes]:
    """``images`` [B, C, H, W] in 0..1 (C = 1 or 3) as 8-bit PNG files, rounded to 1/255 steps."""
    _validate.tensor("images", images)
    if images.dim() != 4 or images.shape[1] not in PNG_MODES:
        raise ValueError(f"images: expected (B, C, H, W) with C = 1 or 3, got shape "
                         f"{tuple(images.shape)}")
    from PIL import Image

    pixels = (images.detach().cpu() * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1)
    mode = PNG_MODES[images.shape[1]]
    out = []
    for img in pixels.numpy():
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if mode == "L" else img, mode=mode).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def read_png_folder(folder: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """The ``.png`` files of ``folder`` (sorted by name) as uint8 [N, H, W, C] (C = 1 or 3), and
    notes to print (files skipped, modes converted). Every image needs the same size and mode;
    16-bit and float images are refused (they are not 8-bit pixels)."""
    folder = _validate.path("folder", folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"folder: {str(folder)!r} is not a folder of PNG images")
    from PIL import Image, UnidentifiedImageError

    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() == ".png")
    if not files:
        raise ValueError(f"{folder}: no .png files in the folder")
    notes = [f"{folder}: {len(files)} PNG images, in the order of their names"]
    others = sum(1 for f in folder.iterdir() if f.is_file()) - len(files)
    if others:
        notes.append(f"{folder}: skipped {others} files that are not .png")
    images: list[np.ndarray] = []
    converted: set[str] = set()
    for f in files:
        try:
            with Image.open(f) as img:
                if img.mode.startswith("I") or img.mode == "F":
                    raise ValueError(f"{f}: {img.mode} PNG, expected 8-bit images")
                if img.mode not in ("L", "RGB"):  # palette, alpha, 1-bit: to grey or colour
                    converted.add(img.mode)
                    img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
                arr = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{f}: not a readable PNG image ({exc})") from None
        arr = arr[..., None] if arr.ndim == 2 else arr
        if images and arr.shape != images[0].shape:
            raise ValueError(f"{f}: image of shape {arr.shape} (H, W, C), {files[0].name} has "
                             f"{images[0].shape}: every image needs the same size and mode")
        images.append(arr)
    if converted:
        notes.append(f"{folder}: images of mode {', '.join(sorted(converted))} converted to "
                     "L (grey) or RGB (alpha dropped)")
    return np.stack(images), notes

