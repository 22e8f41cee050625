"""The WebUI's upscalers as the core's `ImageUpscaler`s: the local model files of its ESRGAN,
Real-ESRGAN, SwinIR, HAT and DAT upscalers on our engine, the rest (LDSR, ScuNET, a model still to
download, Nearest...) through its own code, and, where the settings ask, those same WebUI upscalers
served by our engine wherever the WebUI itself upscales."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from modules import shared
from PIL import Image

from ..errors import FieldError, Interrupted, ModelLoadError, ParamsError, UpscalerFailed
from ..params import HiresParams, upscaler_kind
from ..upscaler import ImageUpscaler, LanczosUpscaler, ModelUpscaler, load_model
from .progress import should_stop

log = logging.getLogger("hires_upscale")

#: The WebUI upscalers whose local model files our spandrel engine runs, by their `name` and class.
#: The rest go through the WebUI's own code: LDSR (not a spandrel model), ScuNET (a 1x denoiser),
#: Lanczos, Nearest. DAT and HAT arrived in v1.8; SwinIR is a built-in extension's class.
ENGINE_SCALERS = {"ESRGAN": "UpscalerESRGAN", "RealESRGAN": "UpscalerRealESRGAN", "DAT": "UpscalerDAT",
                  "HAT": "UpscalerHAT", "SwinIR": "UpscalerSwinIR"}

#: The WebUI's own upscale() doubles at most this many times (a 2x model reaching 8x).
_HOST_STEPS = 3


class HostUpscaler:
    """A WebUI upscaler our engine does not run, through its own code.

    The WebUI's `Upscaler.upscale` hides a failure: the model's `do_upscale` logs its error and hands
    the image back, and `upscale` then Lanczos-resizes it to the target. So the steps are taken here,
    one `do_upscale` at a time, and a step that hands back its input unchanged is that upscaler's
    failure. A 1x model (ScuNET denoises) returns a new picture of the same size: it ran, and the
    rest is resized to the target, as the WebUI does.
    """

    def __init__(self, data: Any) -> None:
        self.data = data
        self.name = data.name

    def upscale(self, image: Image.Image, size: tuple[int, int], *, progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> Image.Image:
        stop = should_stop or (lambda: False)
        scaler = self.data.scaler
        scale = max(size[0] / image.width, size[1] / image.height)
        scaler.scale = scale  # plain upscalers (Nearest) read it in do_upscale, as the WebUI's upscale() sets it
        result = image.convert("RGB")
        for step in range(_HOST_STEPS):
            if result.width >= size[0] and result.height >= size[1]:
                break
            if stop():
                raise Interrupted("stopped while upscaling")
            before = result
            result = scaler.do_upscale(before, self.data.data_path)
            if result is before or (result.size == before.size and result.tobytes() == before.tobytes()):
                raise UpscalerFailed(self.name, "it handed the image back unchanged (the WebUI's console has its "
                                     "error, e.g. a model it could not download or load)")
            if progress is not None:
                progress(step + 1, _HOST_STEPS)
            if result.size == before.size:  # a 1x model: nothing more to gain from another step
                break
        if progress is not None:
            progress(_HOST_STEPS, _HOST_STEPS)
        return result.resize(size, Image.Resampling.LANCZOS) if result.size != size else result


def host_upscalers() -> list[Any]:
    """The WebUI's upscalers now (the list changes on refresh: never cache it)."""
    return list(getattr(shared, "sd_upscalers", []) or [])


def engine_model_path(upscaler: Any) -> Path | None:
    """The local model file of a WebUI upscaler our engine can run, else None."""
    scaler = getattr(upscaler, "scaler", None)
    if getattr(scaler, "name", None) not in ENGINE_SCALERS:
        return None
    for candidate in (getattr(upscaler, "local_data_path", None), getattr(upscaler, "data_path", None)):
        if candidate and not str(candidate).startswith(("http://", "https://")) and os.path.isfile(candidate):
            return Path(candidate)
    return None


def engine_upscalers() -> list[str]:
    """Names of the WebUI's upscalers whose local model file our engine runs."""
    return [u.name for u in host_upscalers() if engine_model_path(u) is not None]


def upscaler_choices() -> list[str]:
    """Upscaler names for the dropdown: models our engine runs, other model upscalers,
    latent modes, then Lanczos / Nearest / None."""
    hosts = host_upscalers()
    engine = engine_upscalers()
    others = [u.name for u in hosts if u.name not in engine and upscaler_kind(u.name) == "model"]
    plain = [u.name for u in hosts if upscaler_kind(u.name) in ("pixel", "none")]
    names = engine + others + list(getattr(shared, "latent_upscale_modes", {}) or {}) + plain
    return list(dict.fromkeys(names)) or ["Lanczos"]


def default_upscaler() -> str:
    """The settings' default upscaler, else the first model file our engine runs, else Lanczos."""
    configured = getattr(shared.opts, "hires_upscale_default_upscaler", "")
    if configured and configured in upscaler_choices():
        return configured
    engine = engine_upscalers()
    return engine[0] if engine else "Lanczos"


def engine_settings(params: HiresParams) -> dict[str, Any]:
    """Tile size and precision for our engine: run parameters, then flags, then settings."""
    flags, settings = shared.cmd_opts, shared.opts
    tile = (params.tile_size or getattr(flags, "hires_upscale_tile_size", None)
            or getattr(settings, "hires_upscale_tile_size", 0))
    fp32 = bool(getattr(flags, "hires_upscale_fp32", False) or getattr(settings, "hires_upscale_fp32", False))
    return {"tile_size": int(tile or 0), "precision": "fp32" if fp32 else "auto"}


def load_engine_model(path: Path, params: HiresParams) -> ModelUpscaler:
    """A local model file on our engine, where and how the WebUI's settings say; a file the
    WebUI's safe unpickler refuses is reported with that reason, not spandrel's confusion."""
    from modules import devices

    try:
        # where the WebUI runs its upscalers (it honours --use-cpu)
        device = getattr(devices, "device_esrgan", None) or devices.device
        return load_model(path, device=device, **engine_settings(params))
    except ModelLoadError as error:
        refusal = safe_unpickle_refusal(path)
        if refusal is not None:
            raise ModelLoadError(path, refusal) from error
        raise


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


def upscaler_for(params: HiresParams) -> Callable[[str], ImageUpscaler]:
    """Maps an upscaler name to our engine (the local model files of ENGINE_SCALERS) or the
    WebUI's own upscaler."""

    def resolve(name: str) -> ImageUpscaler:
        for data in host_upscalers():
            if data.name != name:
                continue
            path = engine_model_path(data)
            if path is not None:
                return load_engine_model(path, params)
            if upscaler_kind(name) == "pixel" and name.lower() == "lanczos":
                return LanczosUpscaler()
            return HostUpscaler(data)
        raise _unknown_upscaler(name)

    return resolve


def _unknown_upscaler(name: str) -> ParamsError:
    allowed = ", ".join(upscaler_choices())
    return ParamsError([FieldError("upscaler", name, f"one of the WebUI's upscalers: {allowed}")])


def check_upscaler(name: str) -> None:
    """Refuse an upscaler name the WebUI does not have, before any work starts."""
    if name not in upscaler_choices():
        raise _unknown_upscaler(name)


# -- the WebUI's own upscalers on our engine ----------------------------------------

def serving_host_upscalers() -> bool:
    return bool(getattr(shared.opts, "hires_upscale_serve_webui", False))


def engine_upscale_native(path: Path, image: Image.Image) -> Image.Image:
    """One pass of a model at its native scale, for the WebUI's own upscaler loop."""
    model = load_engine_model(path, HiresParams())
    return model.upscale(image.convert("RGB"), (image.width * model.scale, image.height * model.scale),
                         should_stop=should_stop)


def serve_host_upscalers() -> None:
    """Route the WebUI's own model upscalers of ENGINE_SCALERS (Extras, the built-in Hires fix,
    other extensions) through our engine while the setting says so. Any failure of ours falls back to the
    WebUI's own code, but an interrupt is the user's: the image is handed back as the WebUI's own
    upscalers do when interrupted, and the slow path does not run."""

    def engine_upscale(path: Path, image: Image.Image) -> Image.Image | None:
        if not serving_host_upscalers():
            return None
        try:
            return engine_upscale_native(path, image)
        except Interrupted:
            return image
        except Exception as error:  # the WebUI's own path is the safe fallback
            log.warning("hires upscale engine failed on %s (%s); using the WebUI's upscaler", path.name, error)
            return None

    _wrap_host_upscalers(engine_upscale)


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


def _wrap_host_upscalers(upscale_with: Callable[[Path, Image.Image], Image.Image | None]) -> None:
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
