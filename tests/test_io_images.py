"""8-bit PNG files of fastfp.io: what is written reads back exactly."""

import numpy as np
import pytest
import torch

from fastfp import io


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_is_exact_for_8bit_images(tmp_path, channels):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, channels, 5, 7), generator=g).float() / 255
    for i, data in enumerate(io.png_bytes(x)):
        io.write_bytes(tmp_path / f"{i:02d}.png", data)
    (tmp_path / "readme.txt").write_text("not an image")
    images, notes = io.read_png_folder(tmp_path)
    assert images.dtype == np.uint8 and images.shape == (3, 5, 7, channels)
    np.testing.assert_array_equal(images, (x * 255).round().byte().permute(0, 2, 3, 1).numpy())
    assert any("skipped 1 files" in n for n in notes)


def test_bad_images_and_folders(tmp_path):
    with pytest.raises(ValueError, match="images: expected \\(B, C, H, W\\) with C = 1 or 3"):
        io.png_bytes(torch.zeros(1, 2, 4, 4))
    with pytest.raises(TypeError, match="images: expected a torch.Tensor"):
        io.png_bytes(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="no .png files"):
        io.read_png_folder(tmp_path)
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="a.png: not a readable PNG image"):
        io.read_png_folder(tmp_path)
