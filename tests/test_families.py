"""Every spandrel SR family on our engine: sizes, tiles, measured memory, and the precision kept."""

from __future__ import annotations

import math

import models
import pytest
import torch
from conftest import noise_image

from hires_upscale import calibration
from hires_upscale import upscaler as engine
from hires_upscale.upscaler import image_to_tensor, load_model

#: One random-weight model per family, small enough for the unit tier.
FAMILIES = {
    "ESRGAN": lambda: models.rrdb(4, filters=16, blocks=2),
    "Compact": lambda: models.compact(2),
    "SwinIR": lambda: models.swinir(4),
    "HAT": lambda: models.hat(2),
    "DAT": lambda: models.dat(4),
}


@pytest.fixture(autouse=True)
def fresh_cache():
    engine.clear_cache()
    yield
    engine.clear_cache()


@pytest.fixture(scope="module")
def family_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("families")
    return {name: models.save_pth(make(), folder / f"{name}.pth") for name, make in FAMILIES.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_reaches_any_size_and_tiles_like_the_whole_frame(family_files, family):
    up = load_model(family_files[family], device="cpu", precision="fp32")
    assert up.architecture == family
    image = noise_image(52, 44, seed=5)  # no training size and no multiple of any window
    for size in [(52 * up.scale, 44 * up.scale), (150, 101)]:
        assert up.upscale(image, size).size == size
    x = image_to_tensor(noise_image(96, 80, seed=5))
    whole = up.upscale_tensor(x)
    up.tiling, up.tile_size = "supported", 48
    assert len(up.grid_for(96, 80)) > 1
    tiled = up.upscale_tensor(x)
    assert tiled.shape == whole.shape
    assert calibration.psnr(whole, tiled) >= 45  # the overlap hides the seams


@pytest.mark.parametrize("family", FAMILIES)
def test_the_precision_kept_stays_within_45_db_of_fp32_or_fp32_says_why(family_files, family):
    reference = load_model(family_files[family], device="cpu", precision="fp32")
    auto = load_model(family_files[family], device="cpu")
    x = image_to_tensor(noise_image(56, 36, seed=9))
    if auto.dtype == torch.float32:
        tried = engine.choose_dtype(auto.descriptor.supports_half, auto.descriptor.supports_bfloat16,
                                    torch.device("cpu"), "auto")
        assert (tried != torch.float32) == bool(auto.calibration.reduced_refused)
    else:
        assert auto.calibration.reduced_psnr >= calibration.REDUCED_MIN_PSNR
        assert calibration.psnr(reference.upscale_tensor(x), auto.upscale_tensor(x)) >= 40
    assert auto.upscale(noise_image(56, 36), (100, 80)).size == (100, 80)


@pytest.mark.skipif(not engine.cpu_has_fast_bf16(), reason="this CPU has no native bfloat16: fp32 is never left")
def test_a_reduced_precision_under_the_bar_is_refused_with_its_figure(family_files, monkeypatch):
    monkeypatch.setattr(calibration, "REDUCED_MIN_PSNR", math.inf)
    up = load_model(family_files["ESRGAN"], device="cpu")
    assert up.dtype == torch.float32
    assert "dB from fp32's" in up.calibration.reduced_refused


def test_transformers_cost_more_memory_per_pixel_and_get_smaller_tiles(tmp_path):
    """Measured, not assumed: HAT of the same width holds several times an RRDB's activations."""
    rrdb = load_model(models.save_pth(models.rrdb(4, filters=64, blocks=2), tmp_path / "r.pth"),
                      device="cpu", precision="fp32")
    hat = load_model(models.save_pth(models.hat(4, dim=60, depths=2, blocks=2), tmp_path / "h.pth"),
                     device="cpu", precision="fp32")
    assert hat.calibration.bytes_per_pixel > 2 * rrdb.calibration.bytes_per_pixel
    assert hat.auto_tile_size(4096, 4096) < rrdb.auto_tile_size(4096, 4096)


@pytest.mark.parametrize("family", ["ESRGAN", "HAT"])
def test_the_probe_does_not_understate_what_a_larger_tile_holds(family_files, family):
    up = load_model(family_files[family], device="cpu", precision="fp32")
    _, per_pixel = calibration._run_counted(up.descriptor, image_to_tensor(noise_image(120, 120)))
    assert up.calibration.bytes_per_pixel >= 0.8 * per_pixel


def test_spandrels_tiling_advice_is_followed(family_files):
    up = load_model(family_files["DAT"], device="cpu", precision="fp32")
    up.tile_size = 32
    assert len(up.grid_for(100, 100)) > 1
    up.tiling = "discouraged"  # tiled only as far as memory requires: here, not at all
    assert len(up.grid_for(100, 100)) == 1
    assert len(up.grid_for(100, 100, tile_size=48)) > 1  # an out-of-memory retry still tiles
    up.tiling = "internal"  # the model tiles itself: never cut
    assert len(up.grid_for(100, 100, tile_size=48)) == 1
