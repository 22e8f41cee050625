"""The adapter's wiring around the WebUI's upscaler classes, on a stand-in `modules` package.

Only the wiring: which code runs when the WebUI's upscaler fails, hands the image back or is
interrupted. That the real WebUI behaves so is tested in tests/webui (test_serve_webui.py,
test_results.py).
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest
from conftest import noise_image
from PIL import Image

from hires_upscale.errors import Interrupted, UpscalerFailed


class State:
    interrupted = skipped = stopping_generation = False


@pytest.fixture
def adapter(monkeypatch, tmp_path):
    """hires_upscale.webui.compat and .upscalers imported against stand-in WebUI modules, with a
    stand-in ESRGAN upscaler class whose `do_upscale` doubles the image (its "WebUI code")."""
    shared = types.SimpleNamespace(opts=types.SimpleNamespace(hires_upscale_serve_webui=True),
                                   cmd_opts=types.SimpleNamespace(), state=State(), sd_upscalers=[])

    class Script:
        pass

    class Upscaler:
        pass

    class UpscalerESRGAN(Upscaler):
        calls = 0

        def do_upscale(self, img, selected_model):
            UpscalerESRGAN.calls += 1
            return img.resize((img.width * 2, img.height * 2))

    modules = types.ModuleType("modules")
    fakes = {"modules": modules, "modules.shared": shared, "modules.processing": types.ModuleType("processing"),
             "modules.scripts": types.SimpleNamespace(Script=Script),
             "modules.upscaler": types.SimpleNamespace(Upscaler=Upscaler)}
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
        if name != "modules":
            setattr(modules, name.split(".")[1], module)
    for name in ("hires_upscale.webui.compat", "hires_upscale.webui.upscalers"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    upscalers = importlib.import_module("hires_upscale.webui.upscalers")
    model = tmp_path / "4x-Test.pth"
    model.write_bytes(b"weights")
    yield types.SimpleNamespace(upscalers=upscalers, shared=shared, esrgan=UpscalerESRGAN, model=str(model))
    for name in ("hires_upscale.webui.compat", "hires_upscale.webui.upscalers"):
        sys.modules.pop(name, None)  # nobody else may see the stand-in WebUI


def serve(adapter, engine):
    adapter.upscalers.engine_upscale_native = engine
    adapter.upscalers.serve_host_upscalers()


def test_served_upscalers_use_the_engine_and_fall_back_to_the_webui_on_its_failure(adapter):
    def failing(path, image):
        raise RuntimeError("spandrel cannot read it")

    serve(adapter, failing)
    image = noise_image(8, 8)
    assert adapter.esrgan().do_upscale(image, adapter.model).size == (16, 16)
    assert adapter.esrgan.calls == 1  # the WebUI's own code ran


def test_an_interrupt_during_a_served_upscale_does_not_run_the_webuis_slow_path(adapter):
    def interrupted(path, image):
        raise Interrupted("stopped between tiles")

    serve(adapter, interrupted)
    image = noise_image(8, 8)
    assert adapter.esrgan().do_upscale(image, adapter.model) is image  # handed back, as the WebUI's own do
    assert adapter.esrgan.calls == 0


class Scaler:
    """A WebUI upscaler class: `do_upscale` as its model gives it, or, with factor 0, the image
    handed back, as the WebUI's upscalers do when their model fails to load."""

    def __init__(self, factor: int) -> None:
        self.factor, self.steps = factor, 0

    def do_upscale(self, img: Image.Image, path: str) -> Image.Image:
        self.steps += 1
        if self.factor == 0:
            return img
        if self.factor == 1:  # a 1x model (ScuNET): a new, denoised picture of the same size
            return img.point(lambda value: 255 - value)
        return img.resize((img.width * self.factor, img.height * self.factor))


def host(adapter, factor: int):
    data = types.SimpleNamespace(name="SwinIR 4x", scaler=Scaler(factor), data_path="/models/SwinIR/x.pth")
    return adapter.upscalers.HostUpscaler(data), data.scaler


def test_a_webui_upscaler_that_hands_the_image_back_is_a_failure_not_a_lanczos_resize(adapter):
    upscaler, _ = host(adapter, 0)
    with pytest.raises(UpscalerFailed, match="SwinIR 4x"):
        upscaler.upscale(noise_image(16, 16), (64, 64))


def test_a_1x_webui_model_runs_once_and_the_rest_is_a_resize(adapter):
    upscaler, scaler = host(adapter, 1)
    source = noise_image(16, 16)
    result = upscaler.upscale(source, (32, 32))
    assert result.size == (32, 32) and scaler.steps == 1
    assert result.tobytes() != source.resize((32, 32), Image.Resampling.LANCZOS).tobytes()


def test_a_webui_upscaler_steps_until_the_target_then_fits_it(adapter):
    upscaler, scaler = host(adapter, 2)
    result = upscaler.upscale(noise_image(16, 16), (48, 48))  # 16 -> 32 -> 64, resized to 48
    assert result.size == (48, 48) and scaler.steps == 2


def test_an_interrupt_stops_a_webui_upscaler_between_its_steps(adapter):
    upscaler, scaler = host(adapter, 2)
    with pytest.raises(Interrupted):
        upscaler.upscale(noise_image(16, 16), (64, 64), should_stop=lambda: scaler.steps >= 1)
    assert scaler.steps == 1


@pytest.fixture
def backend(adapter):
    """hires_upscale.webui.backend on the stand-in WebUI, forgotten afterwards."""
    yield importlib.import_module("hires_upscale.webui.backend")
    sys.modules.pop("hires_upscale.webui.backend", None)  # it holds the stand-in WebUI


def test_forges_per_row_options_follow_tiles_stacked_k_deep(backend):
    """cond_or_uncond per chunk, cond_mark and row indices per row: k tiles of 2 rows are 2k rows."""
    import torch

    options = {"cond_or_uncond": [0, 1], "cond_mark": torch.tensor([0.0, 1.0]), "cond_indices": [0],
               "uncond_indices": [1], "sigmas": torch.tensor([3.0])}
    tiled = backend._forge_options_for(options, 3, 2)
    assert tiled["cond_or_uncond"] == [0, 1] * 3
    assert tiled["cond_mark"].tolist() == [0.0, 1.0] * 3
    assert (tiled["cond_indices"], tiled["uncond_indices"]) == ([0, 2, 4], [1, 3, 5])
    assert tiled["sigmas"] is options["sigmas"]  # per image: as Forge gives it
    assert backend._forge_options_for(options, 1, 2) is options


@pytest.mark.parametrize("several, known, fields, expected", [
    (False, ["inverted.safetensors", "sdxl_vae.safetensors"], {"VAE": "inverted.safetensors"},
     (("inverted.safetensors",), [])),
    (False, ["inverted.safetensors"], {"VAE": "inverted.pt"}, (("inverted.safetensors",), [])),  # by its stem
    (False, ["inverted.safetensors"], {"VAE": "gone.pt"}, ((), ["gone.pt"])),
    (False, ["inverted.safetensors"], {"Module 1": "inverted"}, ((), [])),  # A1111 takes a VAE, not Forge's list
    (False, ["inverted.safetensors"], {}, ((), [])),  # none named: the WebUI's setting stays
    (True, ["ae.safetensors", "clip_l.safetensors", "t5xxl.gguf"],
     {"Module 10": "t5xxl", "Module 2": "clip_l", "Module 1": "ae", "VAE": "other.pt"},
     (("ae.safetensors", "clip_l.safetensors", "t5xxl.gguf"), [])),  # in Forge's order, by number
    (True, ["ae.safetensors"], {"VAE": "ae.safetensors"}, (("ae.safetensors",), [])),  # an A1111 image in Forge
])
def test_an_images_own_vae_and_text_encoders_are_found_by_the_names_each_host_writes(
        backend, monkeypatch, several, known, fields, expected):
    monkeypatch.setattr(backend.compat, "several_modules", lambda: several)
    monkeypatch.setattr(backend.compat, "module_names", lambda: known)
    assert backend.image_modules(fields) == expected


def test_only_the_older_forge_design_refuses_a_hires_vae(adapter, monkeypatch):
    compat = adapter.upscalers.compat
    assert compat.modules_unsupported() is None  # A1111: no modules_forge at all
    older_forge = types.ModuleType("modules_forge")
    older_forge.forge_loader = types.ModuleType("modules_forge.forge_loader")
    monkeypatch.setitem(sys.modules, "modules_forge", older_forge)
    monkeypatch.setitem(sys.modules, "modules_forge.forge_loader", older_forge.forge_loader)
    assert "keeps a VAE once loaded" in compat.modules_unsupported()
