"""A stand-in WebUI for fast unit tests of the adapter's wiring: a `modules` package with the few
names the adapter reads, an img2img that records what it was asked and "denoises" by a resize, and
a `FakeHost`. Only wiring is tested on it; that the real WebUIs behave so is tests/webui's.
"""

from __future__ import annotations

import importlib
import sys
import types
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

#: The adapter's modules, imported afresh against the stand-in and forgotten afterwards.
ADAPTER = ("hires_upscale.webui.progress", "hires_upscale.webui.compat", "hires_upscale.webui.hosts",
           "hires_upscale.webui.upscalers", "hires_upscale.webui.outputs", "hires_upscale.webui.carried",
           "hires_upscale.webui.backend", "hires_upscale.webui.service")


class State:
    interrupted = skipped = stopping_generation = False
    job_count = 0
    textinfo = None
    sampling_step = sampling_steps = 0

    def __init__(self) -> None:
        self.jobs: list[str] = []

    def nextjob(self) -> None:
        pass

    def begin(self, job: str = "") -> None:
        self.jobs.append(job)

    def end(self) -> None:
        pass


class Img2Img:
    """StableDiffusionProcessingImg2Img: the arguments the adapter passes, kept as attributes."""

    def __init__(self, outpath_samples=None, prompt="", negative_prompt="", styles=None, seed=-1, subseed=-1,
                 subseed_strength=0.0, sampler_name=None, scheduler=None, cfg_scale=7.0, steps=20, width=512,
                 height=512, init_images=None, resize_mode=0, denoising_strength=0.75, batch_size=1, n_iter=1,
                 do_not_save_samples=False, do_not_save_grid=False, refiner_checkpoint=None, refiner_switch_at=None,
                 override_settings=None, distilled_cfg_scale=3.5):  # the last one: Forge's (A1111 has none)
        self.__dict__.update({key: value for key, value in locals().items() if key != "self"})
        self.closed = False

    def init(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@dataclass
class WebUI:
    """The stand-in's parts a test looks at or changes."""

    modules: dict[str, Any]
    shared: Any
    #: every img2img the adapter ran, in order
    passes: list[Img2Img] = field(default_factory=list)
    #: raised by the next passes whose batch size is in this set ("CUDA out of memory" or another error)
    failing: dict[int, BaseException] = field(default_factory=dict)

    def process_images(self, p: Img2Img) -> Any:
        self.passes.append(p)
        p.init()
        error = self.failing.get(p.batch_size)
        if error is not None:
            raise error
        images = [image.resize((p.width, p.height)) for image in p.init_images]
        return types.SimpleNamespace(images=images, extra_generation_params={})


def install(monkeypatch, tmp_path) -> WebUI:
    """The stand-in `modules` in sys.modules (undone by monkeypatch), and the adapter imported against it."""
    shared = types.SimpleNamespace(
        opts=types.SimpleNamespace(data={}, samples_save=False, sd_model_checkpoint="loaded.safetensors [abc]"),
        cmd_opts=types.SimpleNamespace(), state=State(),
        sd_upscalers=[types.SimpleNamespace(name="Lanczos", scaler=types.SimpleNamespace(name="Lanczos"),
                                            data_path=None)],
        sd_model=types.SimpleNamespace(sd_checkpoint_info=types.SimpleNamespace(filename="a.ckpt")),
        latent_upscale_modes={"Latent": {"mode": "bilinear", "antialias": False}})
    webui = WebUI({}, shared)
    processing = types.SimpleNamespace(StableDiffusionProcessingImg2Img=Img2Img, process_images=webui.process_images)

    class Script:
        pass

    class ScriptRunner:
        alwayson_scripts: list = []

    class Upscaler:
        pass

    package = types.ModuleType("modules")
    # the one checkpoint here: what the setting names (an image's own "Model" is not here)
    loaded = types.SimpleNamespace(name="loaded.safetensors", title="loaded.safetensors [abc]")
    webui.modules = {
        "modules": package, "modules.shared": shared, "modules.processing": processing,
        "modules.scripts": types.SimpleNamespace(Script=Script, ScriptRunner=ScriptRunner),
        "modules.upscaler": types.SimpleNamespace(Upscaler=Upscaler),
        "modules.devices": types.SimpleNamespace(device=types.SimpleNamespace(type="cpu"), torch_gc=lambda: None),
        "modules.paths": types.SimpleNamespace(data_path=str(tmp_path)),
        "modules.sd_models": types.SimpleNamespace(model_data=types.SimpleNamespace(sd_model=shared.sd_model),
                                                   get_closet_checkpoint_match={loaded.title: loaded}.get,
                                                   select_checkpoint=lambda: loaded,
                                                   checkpoints_list={loaded.title: loaded}),
        "modules.call_queue": types.SimpleNamespace(queue_lock=nullcontext()),
        "modules.sd_samplers": types.SimpleNamespace(visible_sampler_names=lambda: ["DPM++ 2M", "Euler a", "Euler"]),
    }
    for name, module in webui.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
        if name != "modules":
            setattr(package, name.split(".")[1], module)
    for name in ADAPTER:
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name in ADAPTER:
        importlib.import_module(name)
    return webui


def forget_adapter() -> None:
    """Nobody else may see the adapter built on the stand-in WebUI."""
    for name in ADAPTER:
        sys.modules.pop(name, None)


@dataclass
class FakeHost:
    """A `hosts.Host` that records what the adapter asks of it."""

    kind: str = "fake"
    max_modules: int = 1
    module_setting: str = "sd_vae"
    modules_refused: str | None = None
    has_distilled_cfg: bool = False
    family: str = "sd15"
    #: what `distilled_cfg_scale` is to its model (None: not read)
    guidance: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    #: why it cannot tile, if it cannot
    untileable: str | None = None
    loaded_back: list[Any] = field(default_factory=list)
    nested: list[Any] = field(default_factory=list)
    tiled: list[Any] = field(default_factory=list)

    def model_family(self, model: Any) -> str:
        return self.family

    def engine_name(self, model: Any) -> str:
        return type(model).__name__

    def guidance_kind(self, model: Any) -> str | None:
        return self.guidance

    def one_image_per_pass(self, model: Any) -> bool:
        return False

    def after_encode(self, img2img: Any) -> None:
        pass

    def module_files(self) -> dict[str, str]:
        return dict(self.files)

    def image_module_names(self, fields) -> list[str]:
        return [fields["VAE"]] if fields.get("VAE") else []

    def refresh_modules(self) -> None:
        pass

    def second_pass_modules(self, names):
        return nullcontext()

    def load_checkpoint_back(self, before: Any) -> None:
        self.loaded_back.append(before)

    def after_nested_job(self, outer: Any) -> None:
        self.nested.append(outer)

    def cannot_tile(self, model: Any) -> str | None:
        return self.untileable

    @contextmanager
    def tiled_pass(self, img2img, settings, fallback, notify):
        self.tiled.append((img2img.width, img2img.height))
        yield


def noise(width: int, height: int) -> Image.Image:
    return Image.effect_noise((width, height), 64).convert("RGB")
