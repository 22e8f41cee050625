"""Every difference between WebUI versions (A1111 v1.6-v1.10, Forge), in one place.

The rest of the adapter calls these names and never checks a version itself.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules import processing, scripts, shared

from ..params import BUILT_IN_MODULES

#: v1.8+ runs postprocess_image_after_composite on the composited (inpaint) image.
HAS_AFTER_COMPOSITE: bool = hasattr(scripts.Script, "postprocess_image_after_composite")

#: The WebUI upscalers whose local model files our spandrel engine runs, by their `name` and class.
#: The rest go through the WebUI's own code: LDSR (not a spandrel model), ScuNET (a 1x denoiser),
#: Lanczos, Nearest. DAT and HAT arrived in v1.8; SwinIR is a built-in extension's class.
ENGINE_SCALERS = {"ESRGAN": "UpscalerESRGAN", "RealESRGAN": "UpscalerRealESRGAN", "DAT": "UpscalerDAT",
                  "HAT": "UpscalerHAT", "SwinIR": "UpscalerSwinIR"}


def input_accordion(value: bool, label: str, elem_id: str) -> Any:
    """The WebUI's InputAccordion: a class in A1111 (v1.6+), a function in Forge; both used alike."""
    from modules.ui_components import InputAccordion

    return InputAccordion(value, label=label, elem_id=elem_id)


def tool_button(symbol: str, elem_id: str, tooltip: str) -> Any:
    from modules.ui_components import ToolButton

    return ToolButton(value=symbol, elem_id=elem_id, tooltip=tooltip)


def composites_per_image(p: Any) -> bool:
    """Whether the WebUI pastes each result into an original (inpainting): then the upscale waits for
    the composited image (v1.8+), and each image has its own pass."""
    return getattr(p, "image_mask", None) is not None or bool(getattr(p, "overlay_images", None))


def tensor_to_image(tensor: Any) -> Any:
    """A decoded image of a batch (C, H, W floats in 0..1, as the WebUI hands them to scripts) as RGB."""
    import numpy as np
    from PIL import Image

    pixels = (255.0 * np.moveaxis(tensor.detach().float().cpu().numpy(), 0, 2)).astype(np.uint8)
    return Image.fromarray(pixels)


def image_to_tensor(image: Any) -> Any:
    """The inverse of `tensor_to_image`, exact: the WebUI's own conversion gives back the same bytes."""
    import numpy as np
    import torch

    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(pixels, 2, 0)))


def image_index(p: Any) -> int:
    """Index of the image being post-processed within the whole job (all batches)."""
    batch_index = getattr(p, "batch_index", None)
    if batch_index is None:  # very old WebUIs: count calls ourselves
        batch_index = getattr(p, "_hires_upscale_seen", 0)
        p._hires_upscale_seen = batch_index + 1
        return batch_index
    return p.iteration * p.batch_size + batch_index


def sampler_names() -> list[str]:
    from modules import sd_samplers

    if hasattr(sd_samplers, "visible_sampler_names"):
        return list(sd_samplers.visible_sampler_names())
    return [s.name for s in sd_samplers.samplers]


def scheduler_names() -> list[str]:
    """Schedulers as the WebUI labels them; empty before v1.9, where the sampler name carries it."""
    try:
        from modules import sd_schedulers
    except ImportError:
        return []
    return [s.label for s in sd_schedulers.schedulers]


@functools.cache
def _img2img_arguments() -> frozenset[str]:
    """The keyword arguments StableDiffusionProcessingImg2Img takes in this WebUI: v1.6/v1.7 pass
    **kwargs up to the base class, so every level's names count."""
    names: set[str] = set()
    for cls in processing.StableDiffusionProcessingImg2Img.__mro__:
        if cls is object or "__init__" not in vars(cls):
            continue
        names |= {name for name, param in inspect.signature(cls.__init__).parameters.items()
                  if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)}
    return frozenset(names)


def make_img2img(**arguments: Any) -> Any:
    """A StableDiffusionProcessingImg2Img from the arguments this WebUI version knows.

    Newer arguments (e.g. `scheduler`, v1.9+) are dropped on older versions,
    where the sampler name already selects the schedule.
    """
    known = _img2img_arguments()
    return processing.StableDiffusionProcessingImg2Img(**{k: v for k, v in arguments.items() if k in known})


def _family_of(model: Any) -> str:
    if getattr(model, "is_sdxl", False):
        return "sdxl"
    if getattr(model, "is_sd2", False):
        return "sd2"
    return "sd15"


def model_family() -> str:
    """"sd15", "sd2" or "sdxl" for the checkpoint the next pass uses (loading it if needed)."""
    return _family_of(shared.sd_model)


def model_family_loaded() -> str:
    """Like `model_family`, but never loads a checkpoint (for UI previews): "sd15" until one is loaded."""
    from modules import sd_models

    return _family_of(getattr(getattr(sd_models, "model_data", None), "sd_model", None))


def host_upscalers() -> list[Any]:
    """The WebUI's upscalers now (the list changes on refresh: never cache it)."""
    return list(getattr(shared, "sd_upscalers", []) or [])


def latent_modes() -> list[str]:
    return list(getattr(shared, "latent_upscale_modes", {}) or {})


def latent_interpolation(name: str) -> tuple[str, bool]:
    """torch's interpolation mode and antialias flag of a WebUI latent mode, as its built-in Hires fix
    resizes latents ("Latent (nearest-exact)" -> ("nearest-exact", False))."""
    mode = (getattr(shared, "latent_upscale_modes", {}) or {}).get(name) or {}
    return str(mode.get("mode", "bilinear")), bool(mode.get("antialias", False))


def refresh_upscalers() -> None:
    from modules import modelloader

    modelloader.load_upscalers()


def engine_model_path(upscaler: Any) -> Path | None:
    """The local model file of a WebUI upscaler our engine can run, else None."""
    scaler = getattr(upscaler, "scaler", None)
    if getattr(scaler, "name", None) not in ENGINE_SCALERS:
        return None
    for candidate in (getattr(upscaler, "local_data_path", None), getattr(upscaler, "data_path", None)):
        if candidate and not str(candidate).startswith(("http://", "https://")) and os.path.isfile(candidate):
            return Path(candidate)
    return None


def upscaler_device() -> Any:
    """Where the WebUI runs upscalers (honours --use-cpu)."""
    from modules import devices

    return getattr(devices, "device_esrgan", None) or devices.device


@dataclass(frozen=True)
class TilingTargets:
    """The parts of a loaded checkpoint the low-VRAM mode wraps for the second pass."""

    encoder: Any
    decoder: Any
    #: the object whose `apply_model(x, t, cond)` the samplers call
    denoiser: Any
    unet: Any


@dataclass(frozen=True)
class ForgeTilingTargets:
    """Forge runs its UNet and VAE through patchers: the low-VRAM mode uses their public switches
    (`set_model_unet_function_wrapper`, `memory_management.VAE_ALWAYS_TILED`) instead of modules."""

    model: Any


def tiling_targets(p: Any) -> TilingTargets | ForgeTilingTargets | str:
    """What to tile in the model of img2img `p` (None: the loaded one), or why this host cannot."""
    model = getattr(p, "sd_model", None) or shared.sd_model
    if hasattr(model, "forge_objects"):
        return ForgeTilingTargets(model)
    vae = getattr(model, "first_stage_model", None)
    unet = getattr(getattr(model, "model", None), "diffusion_model", None)
    if vae is None or unet is None or not hasattr(model, "apply_model"):
        return f"the loaded model ({type(model).__name__}) has no VAE/UNet layout this extension knows"
    return TilingTargets(getattr(vae, "encoder", None), getattr(vae, "decoder", None), model, unet)


@contextmanager
def forge_vae_tiled() -> Iterator[None]:
    """Forge's VAE encodes and decodes tiled within the block (its own tiles), as its "Never OOM
    Integrated" switches it; the value before is put back after, that extension's included."""
    from backend import memory_management

    before = memory_management.VAE_ALWAYS_TILED
    memory_management.VAE_ALWAYS_TILED = True
    try:
        yield
    finally:
        memory_management.VAE_ALWAYS_TILED = before


@contextmanager
def forge_unet_wrapped(p: Any, wrapper: Any) -> Iterator[None]:
    """Forge: every UNet call of `p`'s sampling goes through `wrapper(apply_model, args)`.

    Forge copies its patchers from `forge_objects_after_applying_lora` at the start of each
    sampling (after LoRAs), and extensions patch that copy in process_before_every_sampling. So a
    clone of that UNet patcher with the wrapper stands in for it during `p.sample`; an extension that
    sets its own wrapper (MultiDiffusion Integrated) then replaces ours, which the caller can tell
    from its wrapper not being called."""
    sample = p.sample

    def sample_wrapped(*args: Any, **kwargs: Any) -> Any:
        model = p.sd_model
        base = model.forge_objects_after_applying_lora
        objects = base.shallow_copy()
        objects.unet = objects.unet.clone()
        objects.unet.set_model_unet_function_wrapper(wrapper)
        model.forge_objects_after_applying_lora = objects
        try:
            return sample(*args, **kwargs)
        finally:
            model.forge_objects_after_applying_lora = base

    p.sample = sample_wrapped
    try:
        yield
    finally:
        p.sample = sample


def unet_hooked(unet: Any) -> str | None:
    """Why tiles cannot go through the UNet as it is now: another extension (ControlNet,
    regional prompting) replaced its forward for the whole picture."""
    if "forward" in vars(unet):
        owner = getattr(vars(unet)["forward"], "__module__", None) or "another extension"
        return f"the UNet is hooked by {owner} (e.g. ControlNet), whose inputs cover the whole picture"
    return None


def free_gpu_memory() -> int | None:
    """Bytes free on the WebUI's CUDA device; None on the CPU or MPS (no reliable number)."""
    import torch
    from modules import devices

    device = getattr(devices, "device", None)
    if getattr(device, "type", None) != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    # memory torch holds but does not use is free to us as well
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def vae_dtype_bytes() -> int:
    """Bytes per value of the VAE, whose decode is the second pass's largest allocation."""
    import torch
    from modules import devices

    return torch.empty((), dtype=getattr(devices, "dtype_vae", torch.float32)).element_size()


def release_memory() -> None:
    """Give cached device memory back after an out-of-memory error."""
    from modules import devices

    devices.torch_gc()


def queue_lock() -> Any:
    from modules.call_queue import queue_lock as lock

    return lock


def should_stop() -> bool:
    state = shared.state
    return bool(state.interrupted or state.skipped or getattr(state, "stopping_generation", False))


def add_job() -> None:
    """Tell the progress bar (and its ETA) one more job, one of our stages, is coming."""
    state = shared.state
    state.job_count = max(state.job_count, 0) + 1  # -1 means "not counted yet" (our own tab and API jobs)


def next_job() -> None:
    shared.state.nextjob()


def report_progress(text: str | None, done: int = 0, total: int = 0) -> None:
    """The WebUI's progress text and bar for the stage at hand."""
    state = shared.state
    state.textinfo = text
    if total:
        state.sampling_steps, state.sampling_step = total, done


def data_path() -> Path:
    from modules import paths

    return Path(getattr(paths, "data_path", os.getcwd()))


def find_checkpoint(name: str) -> str | None:
    """The title of the checkpoint a name (an infotext's "Model", a title, a file name) means, if
    this WebUI has it."""
    from modules import sd_models

    info = sd_models.get_closet_checkpoint_match(name)
    return info.title if info is not None else None


def refresh_checkpoints() -> None:
    from modules import sd_models

    sd_models.list_models()


def checkpoint_titles() -> list[str]:
    from modules import sd_models

    return sorted(info.title for info in sd_models.checkpoints_list.values())


def loaded_checkpoint() -> Any:
    """The checkpoint (its info) the WebUI has loaded now."""
    return getattr(shared.sd_model, "sd_checkpoint_info", None)


def load_checkpoint_back(before: Any) -> None:
    """Load `before` (a `loaded_checkpoint()`) again if something else is loaded now: the WebUI
    restores the setting after an override but leaves the other model loaded until its next batch
    (A1111), or until its next job (Forge, which loads what its restored setting says)."""
    from modules import sd_models

    if hasattr(sd_models, "forge_model_reload"):
        sd_models.forge_model_reload()
        return
    now = loaded_checkpoint()
    if before is not None and now is not None and now.filename != before.filename:
        sd_models.reload_model_weights(info=before)


@contextmanager
def first_pass_checkpoint_kept() -> Iterator[None]:
    """Whatever the passes inside load (a hires checkpoint, a refiner, an image's own), the
    checkpoint loaded before is loaded again afterwards, also after an error or an interrupt."""
    before = loaded_checkpoint()
    try:
        yield
    finally:
        load_checkpoint_back(before)


#: The settings that choose a checkpoint's VAE (A1111) or its VAE and text encoders (Forge).
MODULE_SETTINGS = ("sd_vae", "forge_additional_modules")


def _forge_module_files() -> dict[str, str] | None:
    """Forge: its VAE and text-encoder files by file name (its "VAE / Text Encoder" list); None on A1111."""
    try:
        from modules_forge import main_entry
    except ImportError:
        return None
    if not main_entry.module_list:  # filled when its UI is built; an API-only start has not yet
        main_entry.refresh_models()
    return dict(main_entry.module_list)


def modules_unsupported() -> str | None:
    """Why this WebUI's pass cannot take its own VAE, if so: in the test, reForge (on the older Forge's
    loader) loaded another VAE but kept it after `sd_vae` went back, so later passes and jobs ran with
    it, while their infotext said otherwise."""
    if _forge_module_files() is not None:
        return None
    try:
        from modules_forge import forge_loader  # noqa: F401  (only the older Forge design has it)
    except ImportError:  # A1111
        return None
    return ("this WebUI (reForge, on the older Forge loader) keeps a VAE once loaded, so the first "
            "pass's could not be put back")


def module_names() -> list[str]:
    """The files a second pass may take as its VAE (Forge: also its text encoders), by file name."""
    forge = _forge_module_files()
    if forge is not None:
        return sorted(forge)
    from modules import sd_vae

    return sorted(sd_vae.vae_dict)


def several_modules() -> bool:
    """Whether a pass takes more than one module file (Forge: a VAE and text encoders; A1111: one VAE)."""
    return _forge_module_files() is not None


def refresh_modules() -> None:
    try:
        from modules_forge import main_entry
    except ImportError:
        from modules import sd_vae

        sd_vae.refresh_vae_list()
        return
    main_entry.refresh_models()


@contextmanager
def second_pass_modules(names: tuple[str, ...]) -> Iterator[None]:
    """The passes inside run with these VAE / text-encoder files (`BUILT_IN_MODULES` alone: the
    checkpoint's own; none: as the first pass), and the first pass's setting is back afterwards.

    Set here around the nested job, not as its `override_settings`: A1111 v1.6 fails on an override
    of a setting never saved, and both hosts' restore skips it, leaving the VAE set for the session.
    """
    if not names:
        yield
        return
    forge = _forge_module_files()
    key = "forge_additional_modules" if forge is not None else "sd_vae"
    chosen: Any
    if forge is not None:
        chosen = [] if names == (BUILT_IN_MODULES,) else [forge[name] for name in names]
    else:
        chosen = "None" if names == (BUILT_IN_MODULES,) else names[0]
    missing = object()
    before = shared.opts.data.get(key, missing)
    _use_modules(key, chosen)
    try:
        yield
    finally:
        if before is missing:
            shared.opts.data.pop(key, None)
            _use_modules(key, None)
        else:
            _use_modules(key, before)


def _use_modules(key: str, value: Any) -> None:
    """Set the modules setting (None: the one just popped, now at its default) and have the host use it:
    Forge loads them with its next job's model, A1111 reloads the VAE of the model loaded now.

    Written into `opts.data`, as the hosts' own overrides do: `opts.set` runs the setting's change
    callback, which waits for the queue lock this job holds (A1111's VAE reload), a deadlock."""
    if value is not None:
        shared.opts.data[key] = value
    if key == "forge_additional_modules":
        from modules_forge import main_entry

        main_entry.refresh_model_loading_parameters()  # a no-op reload when they equal the loaded ones
        return
    from modules import sd_vae

    sd_vae.reload_vae_weights()


@contextmanager
def outer_job_kept(outer: Any, settings: Iterable[str]) -> Iterator[None]:
    """A nested `process_images` leaves the outer job as it was: the WebUI's own restore after
    one misses three things, so they are put back here.
    - params.txt: the nested job writes its own parameters over the user's generation.
    - Token merging: A1111 takes it off the model (ratio 0) for the rest of the outer job;
      Forge patches a copy per sampling and needs nothing.
    - Settings the nested job overrides that the user never saved are not in `opts.data`, so the
      WebUI's restore skips them and they stay set for the rest of the session.
    """
    from modules import sd_models

    params_txt = data_path() / "params.txt"
    before_text = params_txt.read_bytes() if params_txt.is_file() else None
    unsaved = [key for key in settings if key not in shared.opts.data]
    try:
        yield
    finally:
        if before_text is not None and params_txt.is_file() and params_txt.read_bytes() != before_text:
            from ..images import write_atomically

            write_atomically(params_txt, lambda stream: stream.write(before_text), overwrite=True)
        for key in unsaved:
            shared.opts.data.pop(key, None)
        if not hasattr(sd_models, "forge_model_reload") and hasattr(outer, "get_token_merging_ratio"):
            sd_models.apply_token_merging(shared.sd_model, outer.get_token_merging_ratio())


def option_info(default: Any, label: str, component: Any = None, component_args: Any = None) -> Any:
    return shared.OptionInfo(default, label, component, component_args, section=("hires_upscale", "Hires upscale"))


def safe_unpickle_refusal(path: Path) -> str | None:
    """Why the WebUI's safe unpickler refuses a pickled model file, or None if it would load it.

    The WebUI replaces torch.load with a checked version that logs and returns
    None on refusal, which upscalers then misreport; this says what really happened.
    """
    if getattr(shared.cmd_opts, "disable_safe_unpickle", False) or path.suffix.lower() not in (".pth", ".pt", ".ckpt"):
        return None
    from modules import safe

    try:
        safe.check_pt(str(path), None)
    except Exception as error:  # the checker raises plain Exceptions with the reason
        return (f"the WebUI's safe unpickler refuses it ({error}); re-save the model with an older torch or "
                "start the WebUI with --disable-safe-unpickle if you trust the file")
    return None


def cmd_option(name: str, default: Any = None) -> Any:
    return getattr(shared.cmd_opts, name, default)


def opt(name: str, default: Any = None) -> Any:
    return getattr(shared.opts, name, default)


def comment(p: Any, text: str) -> None:
    """A note shown under the result in the UI (and in the API's info)."""
    if hasattr(p, "comment"):
        p.comment(text)


def saves_samples(p: Any) -> bool:
    """Whether the WebUI saves this job's images (v1.7+ asks the job; before, the setting and the job's flag)."""
    if callable(getattr(p, "save_samples", None)):
        return bool(p.save_samples())
    return bool(shared.opts.samples_save and not p.do_not_save_samples)


def save_sample(p: Any, image: Any, index: int, *, suffix: str) -> None:
    """Save image `index` of job `p` the way the WebUI saves its samples, with its infotext."""
    from modules import images

    try:
        info = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, index=index)
    except TypeError:  # before v1.7 the index was given as iteration and position
        info = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds,
                                          iteration=p.iteration, position_in_batch=index % p.batch_size)
    images.save_image(image, p.outpath_samples, "", p.all_seeds[index], p.all_prompts[index],
                      shared.opts.samples_format, info=info, p=p, suffix=suffix)


def begin_job(name: str) -> None:
    shared.state.begin(job=name)


def end_job() -> None:
    shared.state.end()


def gpu_call(fn: Any, extra_outputs: list[Any]) -> Any:
    """Run a UI action like the WebUI's own: queue lock, job state, errors shown in the page."""
    from modules.call_queue import wrap_gradio_gpu_call

    return wrap_gradio_gpu_call(fn, extra_outputs=extra_outputs)


def add_option(key: str, info: Any) -> None:
    shared.opts.add_option(key, info)


def _host_upscaler_classes() -> list[type]:
    """The WebUI's upscaler classes our engine can serve, as defined so far (built-in extensions'
    scripts, such as SwinIR's, define theirs when they load)."""
    from modules.upscaler import Upscaler

    def subclasses(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    wanted = set(ENGINE_SCALERS.values())
    return [cls for cls in subclasses(Upscaler) if cls.__name__ in wanted]


def _local_model_file(upscaler: Any, selected_model: str) -> Path | None:
    if selected_model and os.path.isfile(selected_model):
        return Path(selected_model)
    for data in getattr(upscaler, "scalers", []) or []:
        if data.data_path == selected_model:
            return engine_model_path(data)
    return None


def wrap_host_upscalers(upscale_with: Any) -> None:
    """Let `upscale_with(path, image)` do the `do_upscale` steps of ENGINE_SCALERS' local model
    file; where it returns None, the WebUI's own code runs. No public hook exists for this, so the
    classes' `do_upscale` is wrapped; installing twice is harmless."""
    for cls in _host_upscaler_classes():
        original = cls.do_upscale
        if getattr(original, "_hires_upscale_wrapped", False):
            continue

        def do_upscale(self, img, selected_model, _original=original):
            path = _local_model_file(self, selected_model)
            result = upscale_with(path, img) if path is not None else None
            return _original(self, img, selected_model) if result is None else result

        do_upscale._hires_upscale_wrapped = True
        cls.do_upscale = do_upscale


def api_enabled() -> bool:
    """Whether the WebUI serves its HTTP API (--api or --nowebui): our POST route follows it."""
    return bool(getattr(shared.cmd_opts, "api", False) or getattr(shared.cmd_opts, "nowebui", False))
