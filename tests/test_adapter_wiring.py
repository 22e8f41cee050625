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
import standin_webui
from conftest import noise_image
from PIL import Image

from hires_upscale.errors import Interrupted, UpscalerFailed


@pytest.fixture
def adapter(monkeypatch, tmp_path):
    """The adapter imported against the stand-in WebUI (tests/standin_webui.py), with a stand-in
    ESRGAN upscaler class whose `do_upscale` doubles the image (its "WebUI code")."""
    webui = standin_webui.install(monkeypatch, tmp_path)
    webui.shared.opts.hires_upscale_serve_webui = True

    class UpscalerESRGAN(webui.modules["modules.upscaler"].Upscaler):
        calls = 0

        def do_upscale(self, img, selected_model):
            UpscalerESRGAN.calls += 1
            return img.resize((img.width * 2, img.height * 2))

    model = tmp_path / "4x-Test.pth"
    model.write_bytes(b"weights")
    upscalers = importlib.import_module("hires_upscale.webui.upscalers")
    yield types.SimpleNamespace(upscalers=upscalers, shared=webui.shared, esrgan=UpscalerESRGAN, model=str(model))
    standin_webui.forget_adapter()


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
def hosts(adapter):
    return importlib.import_module("hires_upscale.webui.hosts")


def test_forges_per_row_options_follow_tiles_stacked_k_deep(hosts):
    """cond_or_uncond per chunk, cond_mark and row indices per row: k tiles of 2 rows are 2k rows."""
    import torch

    options = {"cond_or_uncond": [0, 1], "cond_mark": torch.tensor([0.0, 1.0]), "cond_indices": [0],
               "uncond_indices": [1], "sigmas": torch.tensor([3.0])}
    tiled = hosts._forge_options_for(options, 3, 2)
    assert tiled["cond_or_uncond"] == [0, 1] * 3
    assert tiled["cond_mark"].tolist() == [0.0, 1.0] * 3
    assert (tiled["cond_indices"], tiled["uncond_indices"]) == ([0, 2, 4], [1, 3, 5])
    assert tiled["sigmas"] is options["sigmas"]  # per image: as Forge gives it
    assert hosts._forge_options_for(options, 1, 2) is options


@pytest.mark.parametrize("kind, known, fields, expected", [
    ("a1111", ["inverted.safetensors", "sdxl_vae.safetensors"], {"VAE": "inverted.safetensors"},
     (("inverted.safetensors",), [])),
    ("a1111", ["inverted.safetensors"], {"VAE": "inverted.pt"}, (("inverted.safetensors",), [])),  # by its stem
    ("a1111", ["inverted.safetensors"], {"VAE": "gone.pt"}, ((), ["gone.pt"])),
    ("a1111", ["inverted.safetensors"], {"Module 1": "inverted"}, ((), [])),  # A1111 takes a VAE, not Forge's list
    ("a1111", ["inverted.safetensors"], {}, ((), [])),  # none named: the WebUI's setting stays
    ("forge", ["ae.safetensors", "clip_l.safetensors", "t5xxl.gguf"],
     {"Module 10": "t5xxl", "Module 2": "clip_l", "Module 1": "ae", "VAE": "other.pt"},
     (("ae.safetensors", "clip_l.safetensors", "t5xxl.gguf"), [])),  # in Forge's order, by number
    ("forge", ["ae.safetensors"], {"VAE": "ae.safetensors"}, (("ae.safetensors",), [])),  # an A1111 image in Forge
])
def test_an_images_own_vae_and_text_encoders_are_found_by_the_names_each_host_writes(hosts, kind, known, fields,
                                                                                      expected):
    host = hosts.ForgeHost() if kind == "forge" else hosts.A1111Host()
    host.module_files = lambda: {name: f"/models/{name}" for name in known}
    backend = importlib.import_module("hires_upscale.webui.backend")
    assert backend.image_modules(fields, host) == expected


def test_the_host_is_told_from_its_own_modules_forge_first(hosts, monkeypatch):
    assert hosts.detect().kind == "a1111"  # no modules_forge at all
    older_forge = types.ModuleType("modules_forge")
    older_forge.forge_loader = types.ModuleType("modules_forge.forge_loader")
    monkeypatch.setitem(sys.modules, "modules_forge", older_forge)
    monkeypatch.setitem(sys.modules, "modules_forge.forge_loader", older_forge.forge_loader)
    reforge = hosts.detect()
    assert reforge.kind == "reforge" and "keeps a VAE once loaded" in reforge.modules_refused
    assert "does not tile" in reforge.cannot_tile(object())
    older_forge.main_entry = types.ModuleType("modules_forge.main_entry")  # Forge has both; it is Forge
    monkeypatch.setitem(sys.modules, "modules_forge.main_entry", older_forge.main_entry)
    assert hosts.detect().kind == "forge"
