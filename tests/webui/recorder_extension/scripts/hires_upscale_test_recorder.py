"""Test-only WebUI extension: records which of its script hooks ran, on which job, with which arguments.

The harness links it into the test WebUI beside ours and names a JSON-lines file in
HIRES_UPSCALE_TEST_RECORD. Its one argument is a text tag. Every hook call appends
{"hook", "kind": "txt2img" | "img2img", "size": [w, h], "args": [...], "inner": bool, "tome": ratio}
(inner: the processing is our second pass; tome: the token merging A1111 has applied to the loaded
model, None where it keeps no such mark, as Forge); every checkpoint load appends
{"hook": "model_loaded", "checkpoint": title}; every INFO-or-worse line of the extension's
"hires_upscale" logger appends {"hook": "log", "level", "message"} (what its engine said it loaded);
every job the WebUI's state begins or ends appends {"hook": "job_begin" | "job_end", "job", "time"}
(time.monotonic(): whether two jobs overlapped). Each hook entry also has the job's sampler,
scheduler, steps, CFG scale and refiner (what a pass really ran with).

While the file named by HIRES_UPSCALE_TEST_RECORD + ".watch" exists, every call of the loaded model's
UNet appends {"hook": "unet", "shape": [batch, channels, h, w]} and every call of its VAE's encoder
and decoder input convolution {"hook": "vae encoder" | "vae decoder", "shape": [...]}: a tiled pass
shows its tiles there (the convolutions run once per tile, the modules themselves may not).

A tag "cfg=X" sets the CFG scale of the img2img jobs it runs in to X (only there, so the
first pass stays as it was): a test sees whether the second pass ran with this extension
and its arguments in its output, not only in this record.

A tag "reads=distilled" makes Forge's loaded engine say it reads the distilled CFG
(`use_distilled_cfg_scale`, what Forge's Flux dev engine says) from a txt2img job's start to its
end, "reads=shift" Forge Neo's `use_shift` (Lumina 2, Z-Image, Wan): Forge's own processing and
infotext then treat the job as they treat those models. Each entry also has the job's
`distilled_cfg_scale` and the loaded engine's class.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import gradio as gr
from modules import script_callbacks, scripts, shared

RECORD = os.environ.get("HIRES_UPSCALE_TEST_RECORD", "")
#: hooks whose first argument after `p` is an object of the WebUI's, not one of ours
WITH_OBJECT = {"postprocess", "postprocess_image", "postprocess_batch_list", "postprocess_image_after_composite",
               "postprocess_maskoverlay"}
HOOKS = ("setup", "before_process", "process", "before_process_batch", "process_batch",
         "process_before_every_sampling", "postprocess_batch", "postprocess_batch_list", "postprocess_image",
         "postprocess_maskoverlay", "postprocess_image_after_composite", "postprocess")


def _append(entry: dict) -> None:
    if RECORD:
        with open(RECORD, "a", encoding="utf-8") as record:
            record.write(json.dumps(entry) + "\n")


def _hook(name: str):
    def method(self, p, *args, **kwargs):
        ours = list(args[1:] if name in WITH_OBJECT else args)
        is_img2img = hasattr(p, "init_images")
        _append({"hook": name, "kind": "img2img" if is_img2img else "txt2img", "size": [p.width, p.height],
                 "args": ours, "inner": bool(getattr(p, "_hires_upscale_inner", False)),
                 "tome": getattr(shared.sd_model, "applied_token_merged_ratio", None),
                 "sampler": getattr(p, "sampler_name", None), "scheduler": getattr(p, "scheduler", None),
                 "steps": getattr(p, "steps", None), "cfg": getattr(p, "cfg_scale", None),
                 "refiner": getattr(p, "refiner_checkpoint", None),
                 "distilled_cfg": getattr(p, "distilled_cfg_scale", None),
                 "engine": type(shared.sd_model).__name__})
        tag = str(ours[0]) if ours else ""
        if name == "process" and is_img2img and tag.startswith("cfg="):
            p.cfg_scale = float(tag[4:])
        if tag.startswith("reads=") and not is_img2img and name in ("process", "postprocess"):
            flag = {"distilled": "use_distilled_cfg_scale", "shift": "use_shift"}[tag[6:]]
            setattr(shared.sd_model, flag, name == "process")

    method.__name__ = name
    return method


class HiresUpscaleTestRecorder(scripts.Script):
    def title(self):
        return "Hires upscale test recorder"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Textbox("", label="Recorder tag", elem_id=f"hires_upscale_test_recorder_{is_img2img}")]


for _name in HOOKS:
    setattr(HiresUpscaleTestRecorder, _name, _hook(_name))


def _model_loaded(model) -> None:
    info = getattr(model, "sd_checkpoint_info", None)
    _append({"hook": "model_loaded", "checkpoint": getattr(info, "title", None)})


script_callbacks.on_model_loaded(_model_loaded)

WATCH = RECORD + ".watch" if RECORD else ""


def _watch_shape(hook: str):
    def record(module, inputs) -> None:
        if WATCH and os.path.exists(WATCH) and inputs and hasattr(inputs[0], "shape"):
            _append({"hook": hook, "shape": list(inputs[0].shape)})

    return record


def _watch_modules(model) -> None:
    """Shape hooks on the loaded model's UNet and its VAE's input convolutions, once per model: A1111's
    LDM model, or Forge's `forge_objects` (where `model.model` and `first_stage_model` do not run)."""
    if model is None or getattr(model, "_hires_upscale_test_watched", False):
        return
    forge = getattr(model, "forge_objects", None)
    if forge is not None:
        unet, vae = forge.unet.model.diffusion_model, forge.vae.first_stage_model
    else:
        unet, vae = model.model.diffusion_model, model.first_stage_model
    model._hires_upscale_test_watched = True
    unet.register_forward_pre_hook(_watch_shape("unet"))
    vae.encoder.conv_in.register_forward_pre_hook(_watch_shape("vae encoder"))
    vae.decoder.conv_in.register_forward_pre_hook(_watch_shape("vae decoder"))


script_callbacks.on_model_loaded(_watch_modules)
script_callbacks.on_cfg_denoiser(lambda params: _watch_modules(shared.sd_model))


def _timed(hook: str, method):
    def run(*args, **kwargs):
        if hook == "job_end":
            _append({"hook": hook, "job": shared.state.job, "time": time.monotonic(),
                     "thread": threading.get_ident()})
        result = method(*args, **kwargs)
        if hook == "job_begin":
            _append({"hook": hook, "job": shared.state.job, "time": time.monotonic(),
                     "thread": threading.get_ident()})
        return result

    return run


shared.state.begin = _timed("job_begin", shared.state.begin)
shared.state.end = _timed("job_end", shared.state.end)


def _recorded(record: logging.LogRecord) -> bool:
    _append({"hook": "log", "level": record.levelname, "message": record.getMessage()})
    return True


# A filter, not a handler: a handler on the logger would keep its warnings from the console on hosts that
# configure no logging (Python's last-resort handler prints them only where no handler exists), unlike
# a user's WebUI, where this extension is not.
_logger = logging.getLogger("hires_upscale")
_logger.setLevel(logging.INFO)
_logger.addFilter(_recorded)


def _engines() -> list[type]:
    """Every diffusion engine class of this Forge / Forge Neo (`backend.diffusion_engine.*`); none on A1111."""
    import importlib
    import inspect
    import pkgutil

    try:
        package = importlib.import_module("backend.diffusion_engine")
        from backend.diffusion_engine.base import ForgeDiffusionEngine
    except ImportError:
        return []
    found = []
    for module in pkgutil.iter_modules(package.__path__):
        loaded = importlib.import_module(f"backend.diffusion_engine.{module.name}")
        found += [cls for _, cls in inspect.getmembers(loaded, inspect.isclass)
                  if issubclass(cls, ForgeDiffusionEngine) and cls is not ForgeDiffusionEngine
                  and cls.__module__ == loaded.__name__]
    return found


def _families_route(demo, app) -> None:
    """GET /hires-upscale-test/engines: what this extension's host makes of each of the WebUI's engine
    classes (an instance not initialised: no weights), for the family tests."""
    from hires_upscale.webui import hosts

    @app.get("/hires-upscale-test/engines")
    def engines() -> dict:
        host = hosts.detect()
        answers = {}
        for cls in _engines():
            model = cls.__new__(cls)
            if cls.__name__ == "Flux":
                model.use_distilled_cfg_scale = True  # what its __init__ sets for Flux dev
            answers[cls.__name__] = {"family": host.model_family(model), "cannot_tile": host.cannot_tile(model),
                                     "guidance": host.guidance_kind(model), "module": cls.__module__}
        return {"host": host.kind, "engines": answers}


script_callbacks.on_app_started(_families_route)
