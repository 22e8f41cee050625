from __future__ import annotations

import numpy as np
import pytest
from conftest import noise_image
from PIL import Image, ImageFilter

from hires_upscale.sharpen import sharpen


def local_contrast(image: Image.Image) -> float:
    pixels = np.asarray(image.convert("L"), float)
    return float(np.abs(np.diff(pixels, axis=1)).mean())


def test_strength_zero_changes_nothing():
    image = noise_image(64, 64)
    assert sharpen(image, 0).tobytes() == image.tobytes()


def test_sharpening_adds_local_contrast_in_proportion():
    soft = noise_image(96, 96).filter(ImageFilter.GaussianBlur(2))
    gentle, strong = sharpen(soft, 0.3), sharpen(soft, 1.0)
    assert local_contrast(soft) < local_contrast(gentle) < local_contrast(strong)
    assert gentle.size == soft.size and gentle.mode == soft.mode


def test_alpha_is_untouched():
    image = noise_image(32, 32).convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize((32, 32)))
    result = sharpen(image, 0.5)
    assert result.mode == "RGBA"
    assert result.getchannel("A").tobytes() == image.getchannel("A").tobytes()


def test_out_of_range_strength_is_refused():
    with pytest.raises(ValueError, match="outside 0..1"):
        sharpen(noise_image(8, 8), 1.5)
