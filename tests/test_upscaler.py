from __future__ import annotations

import os

import models
import numpy as np
import pytest
import torch
from conftest import noise_image
from PIL import Image

from hires_upscale import upscaler as engine
from hires_upscale.calibration import psnr
from hires_upscale.errors import Interrupted, ModelLoadError
from hires_upscale.upscaler import (
    LanczosUpscaler,
    choose_dtype,
    image_to_tensor,
    load_model,
    resolve_upscaler,
    tensor_to_image,
)


@pytest.fixture(autouse=True)
def fresh_cache():
    engine.clear_cache()
    yield
    engine.clear_cache()


def test_rrdb_4x_gives_exactly_the_requested_size_and_is_not_lanczos(rrdb_small):
    up = load_model(rrdb_small, device="cpu", precision="fp32")
    assert (up.scale, up.descriptor.architecture.name, up.dtype) == (4, "ESRGAN", torch.float32)
    image = noise_image(40, 30)
    for size in [(160, 120), (80, 60), (123, 77)]:
        result = up.upscale(image, size)
        assert result.size == size and result.mode == "RGB"
    lanczos = LanczosUpscaler().upscale(image, (160, 120))
    difference = np.abs(np.asarray(up.upscale(image, (160, 120)), float) - np.asarray(lanczos, float))
    assert difference.mean() > 5  # a random-weight model paints something else entirely


def test_compact_architectures_pth_and_safetensors(compact_2x, compact_4x_safetensors):
    two = load_model(compact_2x, device="cpu")
    four = load_model(compact_4x_safetensors, device="cpu")
    assert (two.scale, four.scale) == (2, 4)
    assert two.descriptor.architecture.name == four.descriptor.architecture.name
    assert two.upscale(noise_image(33, 21), (66, 42)).size == (66, 42)
    assert four.upscale(noise_image(33, 21), (100, 100)).size == (100, 100)


def test_tiled_equals_full_frame_in_fp32(rrdb_small):
    up = load_model(rrdb_small, device="cpu", precision="fp32")
    x = image_to_tensor(noise_image(96, 80, seed=3))
    full = up.upscale_tensor(x)  # auto tile: the whole image fits
    assert len(up.grid_for(96, 80)) == 1
    up.tile_size = 48
    assert len(up.grid_for(96, 80)) > 1
    tiled = up.upscale_tensor(x)
    assert full.shape == tiled.shape == (1, 3, 320, 384)
    assert psnr(full, tiled) >= 50


def test_reduced_precision_follows_the_models_flags():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_dtype(True, True, cpu, "fp32") == torch.float32
    assert choose_dtype(True, False, cpu, "auto") == torch.float32  # no bf16 support: fp32
    expected = torch.bfloat16 if engine.cpu_has_fast_bf16() else torch.float32
    assert choose_dtype(False, True, cpu, "auto") == expected
    assert choose_dtype(True, True, cuda, "auto") == torch.float16


def test_auto_precision_stays_close_to_fp32(rrdb_small):
    x = image_to_tensor(noise_image(48, 48, seed=1))
    reference = load_model(rrdb_small, device="cpu", precision="fp32").upscale_tensor(x)
    auto = load_model(rrdb_small, device="cpu", precision="auto")
    assert psnr(reference, auto.upscale_tensor(x)) >= 35


def test_models_are_cached_by_path_and_modification_time(rrdb_small, tmp_path):
    first = load_model(rrdb_small, device="cpu")
    assert load_model(rrdb_small, device="cpu").descriptor is first.descriptor
    copy = tmp_path / "copy.pth"
    copy.write_bytes(rrdb_small.read_bytes())
    loaded = load_model(copy, device="cpu")
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_model(copy, device="cpu").descriptor is not loaded.descriptor


def test_a_new_session_remembers_the_probe_and_a_changed_file_is_probed_again(rrdb_small, tmp_path, monkeypatch):
    from hires_upscale import calibration

    monkeypatch.setenv("HIRES_UPSCALE_CACHE", str(tmp_path / "cache"))
    probes = []
    real = calibration._run_counted
    monkeypatch.setattr(calibration, "_run_counted", lambda *args: probes.append(1) or real(*args))
    first = load_model(rrdb_small, device="cpu")
    assert probes and (tmp_path / "cache" / "calibrations.json").is_file()
    engine.clear_cache()  # a new session: nothing in memory
    probes.clear()
    again = load_model(rrdb_small, device="cpu")
    assert probes == [] and again.calibration == first.calibration and again.dtype == first.dtype
    image = noise_image(24, 24)
    assert again.upscale(image, (96, 96)).tobytes() == first.upscale(image, (96, 96)).tobytes()
    copy = tmp_path / "copy.pth"
    copy.write_bytes(rrdb_small.read_bytes())
    load_model(copy, device="cpu")
    assert probes, "another file (or the same one changed) is probed"


@pytest.mark.reliability(area="Models", tried="a corrupt model file",
                         expected="ModelLoadError naming it")
def test_a_corrupt_file_is_a_named_error(tmp_path):
    broken = tmp_path / "4x-Broken.pth"
    broken.write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError, match="4x-Broken.pth") as caught:
        load_model(broken)
    assert "not a readable model" in caught.value.reason


@pytest.mark.reliability(area="Models", tried="a state dict of no known architecture",
                         expected="ModelLoadError naming it")
def test_an_unknown_architecture_is_a_named_error(tmp_path):
    path = tmp_path / "mystery.pth"
    models.save_pth(torch.nn.Sequential(torch.nn.Linear(4, 4)), path)
    with pytest.raises(ModelLoadError, match="mystery.pth.*does not recognise"):
        load_model(path)


@pytest.mark.reliability(area="Models", tried="a denoiser (DnCNN) given as an upscaler",
                         expected="refused: not a super-resolution model")
def test_a_model_that_does_not_upscale_is_refused(tmp_path):
    path = models.save_pth(models.dncnn(), tmp_path / "denoiser.pth")
    with pytest.raises(ModelLoadError, match="denoiser.pth.*Restoration model.*not a super-resolution"):
        load_model(path)


@pytest.mark.reliability(area="Models", tried="a missing file and a file of another type",
                         expected="ModelLoadError saying which")
def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "nothing.pth")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelLoadError, match="unsupported file type"):
        load_model(text)


def test_alpha_is_kept_and_resized_apart(rrdb_small):
    up = load_model(rrdb_small, device="cpu")
    image = noise_image(32, 32).convert("RGBA")
    alpha = Image.new("L", (32, 32), 0)
    alpha.paste(255, (0, 0, 16, 32))
    image.putalpha(alpha)
    result = up.upscale(image, (128, 128))
    assert result.mode == "RGBA"
    assert result.getpixel((10, 64))[3] == 255 and result.getpixel((120, 64))[3] == 0


@pytest.mark.reliability(area="Models", tried="out of memory during a tile",
                         expected="retried with smaller tiles, same result")
def test_out_of_memory_retries_with_smaller_tiles(rrdb_small, monkeypatch):
    up = load_model(rrdb_small, device="cpu", precision="fp32")
    up.tile_size = 128
    original = up._run_model
    tile_sizes = []

    def run_model(batch):
        tile_sizes.append(batch.shape[-1])
        if batch.shape[-1] > 64:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 GB")
        return original(batch)

    monkeypatch.setattr(up, "_run_model", run_model)
    result = up.upscale_tensor(image_to_tensor(noise_image(128, 128)))
    assert result.shape == (1, 3, 512, 512)
    assert tile_sizes[0] == 128 and set(tile_sizes[1:]) == {64}


def test_other_errors_are_not_swallowed(rrdb_small, monkeypatch):
    up = load_model(rrdb_small, device="cpu")
    monkeypatch.setattr(up, "_run_model", lambda batch: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        up.upscale(noise_image(16, 16), (64, 64))


def test_interruption_between_tiles(rrdb_small):
    up = load_model(rrdb_small, device="cpu")
    up.tile_size = 32
    calls = []
    with pytest.raises(Interrupted):
        up.upscale(noise_image(96, 96), (384, 384), should_stop=lambda: len(calls) >= 2,
                   progress=lambda done, total: calls.append((done, total)))
    assert len(calls) == 2


def test_lanczos_by_name_and_tensor_round_trip():
    assert isinstance(resolve_upscaler("LANCZOS"), LanczosUpscaler)
    image = noise_image(20, 10)
    assert tensor_to_image(image_to_tensor(image)).tobytes() == image.tobytes()
    gray = image.convert("L")
    assert tensor_to_image(image_to_tensor(gray)).tobytes() == gray.tobytes()
