"""The WebUIs this extension runs in: one class each, behind the `Host` protocol.

Every difference between A1111, Forge and reForge that the adapter meets is a method or an
attribute here; the rest of the adapter asks the host object it was handed and never tests which
WebUI it is in. The host is detected once, at start (`detect`), from an ordered list of detectors,
the most specific first; A1111 is what remains. (Plain differences between A1111 versions, v1.6 to
v1.10, are `compat`'s.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any, Protocol

from modules import shared

from ..advice import Advice
from ..memory import TileSettings
from ..params import BUILT_IN_MODULES
from ..resolution import UNKNOWN, family
from ..tiled_unet import UNetTiler, tiled_unet
from ..tiled_vae import tiled_vae
from .progress import should_stop

#: what a tiled pass calls when a UNet call had to run full frame (the reason)
Fallback = Callable[[str], None]
Notify = Callable[[Advice], None]

#: Forge names each module of an image's pass in its PNG info as "Module 1", "Module 2"...
_MODULE_KEY = re.compile(r"Module (\d+)")


class Host(Protocol):
    """What differs between the WebUIs, as the adapter uses it."""

    #: "a1111", "forge", "forge-neo" or "reforge": GET options reports it
    kind: str
    #: how many VAE / text-encoder files one pass takes (A1111: one VAE)
    max_modules: int
    #: the setting that holds the pass's VAE / text encoders (`sd_vae`, `forge_additional_modules`)
    module_setting: str
    #: why this host's pass cannot take its own VAE / text encoders; None where it can
    modules_refused: str | None
    #: whether its jobs have Forge's `distilled_cfg_scale` (Flux dev's guidance, Forge Neo's shift)
    has_distilled_cfg: bool

    def model_family(self, model: Any) -> str:
        """Our family of a loaded model, named from the host's own model class or flags ("sd15" when
        none is loaded; `UNKNOWN` for one this extension does not know)."""
        ...

    def engine_name(self, model: Any) -> str:
        """The host's name for the kind of model loaded (Forge's engine class, A1111's model class)."""
        ...

    def guidance_kind(self, model: Any) -> str | None:
        """What `distilled_cfg_scale` is to `model`: "distilled CFG" (Flux dev), "shift" (Forge Neo's
        Lumina, Z-Image, Wan), or None where the model does not read it (and A1111 has no such field)."""
        ...

    def one_image_per_pass(self, model: Any) -> bool:
        """Whether `model`'s img2img encodes only the first image of a batch (Forge Neo's Qwen-Image, Anima, Wan)."""
        ...

    def after_encode(self, img2img: Any) -> None:
        """Right after the pass's images were encoded: undo what the host did with them beyond the init
        latent (Forge Neo's Flux.2 keeps them as an edit reference)."""
        ...

    def module_files(self) -> dict[str, str]:
        """The VAE / text-encoder files a pass may take: file name -> the setting's value for it."""
        ...

    def image_module_names(self, fields: Mapping[str, str]) -> list[str]:
        """The VAE / text-encoder names an image's PNG info gives, as this host writes them."""
        ...

    def refresh_modules(self) -> None: ...

    def second_pass_modules(self, names: tuple[str, ...]) -> AbstractContextManager[None]:
        """The passes inside run with these files (`BUILT_IN_MODULES` alone: the checkpoint's own;
        none: as the first pass), and the first pass's setting is back afterwards."""
        ...

    def load_checkpoint_back(self, before: Any) -> None:
        """Load `before` (the checkpoint info loaded before a pass) again if another is loaded now."""
        ...

    def after_nested_job(self, outer: Any) -> None:
        """What a nested `process_images` took from the outer job and the host does not put back."""
        ...

    def cannot_tile(self, model: Any) -> str | None:
        """Why the second pass of `model` cannot run tiled here; None where it can."""
        ...

    def tiled_pass(self, img2img: Any, settings: TileSettings, fallback: Fallback,
                   notify: Notify) -> AbstractContextManager[None]:
        """Within the block, `img2img`'s VAE and UNet run tiled (entered from its `init`, once any
        checkpoint override has loaded the model); a UNet call that must run full frame is told to
        `fallback`, and anything else the user should know to `notify`."""
        ...


class WebUIHost:
    """What the hosts share, as defaults a host class keeps or replaces."""

    kind = "webui"
    max_modules = 1
    module_setting = "sd_vae"
    modules_refused: str | None = None
    has_distilled_cfg = False

    def model_family(self, model: Any) -> str:
        if model is None:
            return "sd15"
        # A1111 v1.6+ sets these flags on every model it loads; v1.10 adds SD3
        for flag, name in (("is_sdxl", "sdxl"), ("is_sd3", "sd3"), ("is_sd2", "sd2"), ("is_sd1", "sd15")):
            if getattr(model, flag, False):
                return name
        return UNKNOWN

    def engine_name(self, model: Any) -> str:
        return type(model).__name__

    def guidance_kind(self, model: Any) -> str | None:
        return None

    def one_image_per_pass(self, model: Any) -> bool:
        return False

    def after_encode(self, img2img: Any) -> None:
        """Nothing: the host keeps no more of the images than the init latent."""

    def untileable_family(self, model: Any) -> str | None:
        """Why `model`'s family is never tiled, on any host; None for the UNet families."""
        name = self.model_family(model)
        found = family(name)
        if not found.known:
            return (f"this extension does not know the loaded model's family (the WebUI's {self.engine_name(model)}), "
                    "so it does not tile its pass")
        if not found.tileable:
            return (f"tiled mode is not available for {name} on this host: a transformer attends across the whole "
                    "picture, so tiles sampled apart would not agree, and its memory goes to its weights, which "
                    "tiles do not shrink (README: Low-VRAM mode)")
        return None

    def image_module_names(self, fields: Mapping[str, str]) -> list[str]:
        return [fields["VAE"]] if fields.get("VAE") else []

    @contextmanager
    def second_pass_modules(self, names: tuple[str, ...]) -> Iterator[None]:
        # Written into `opts.data` around the nested job, not as its `override_settings`: A1111 v1.6 fails on
        # an override of a setting never saved, and the hosts' restore skips it, leaving it set for the
        # session. Never through `opts.set`: its change callback waits for the queue lock this job holds.
        if not names:
            yield
            return
        missing = object()
        before = shared.opts.data.get(self.module_setting, missing)
        shared.opts.data[self.module_setting] = self._setting_value(names)
        self._use_modules()
        try:
            yield
        finally:
            if before is missing:
                shared.opts.data.pop(self.module_setting, None)
            else:
                shared.opts.data[self.module_setting] = before
            self._use_modules()

    def _setting_value(self, names: tuple[str, ...]) -> Any:
        raise NotImplementedError

    def _use_modules(self) -> None:
        """Have the host use the setting as it is now."""
        raise NotImplementedError


class A1111Host(WebUIHost):
    """AUTOMATIC1111 v1.6-v1.10: LDM models; `sd_vae` for the VAE; samplers call `apply_model`."""

    kind = "a1111"

    def module_files(self) -> dict[str, str]:
        from modules import sd_vae

        return {name: name for name in sd_vae.vae_dict}

    def refresh_modules(self) -> None:
        from modules import sd_vae

        sd_vae.refresh_vae_list()

    def _setting_value(self, names: tuple[str, ...]) -> Any:
        return "None" if names == (BUILT_IN_MODULES,) else names[0]

    def _use_modules(self) -> None:
        """The VAE of the model loaded now is reloaded."""
        from modules import sd_vae

        sd_vae.reload_vae_weights()

    def load_checkpoint_back(self, before: Any) -> None:
        from modules import sd_models

        now = getattr(shared.sd_model, "sd_checkpoint_info", None)
        if before is not None and now is not None and now.filename != before.filename:
            sd_models.reload_model_weights(info=before)

    def after_nested_job(self, outer: Any) -> None:
        # A nested process_images takes token merging off the model (ratio 0) for the rest of the outer job.
        from modules import sd_models

        if hasattr(outer, "get_token_merging_ratio"):
            sd_models.apply_token_merging(shared.sd_model, outer.get_token_merging_ratio())

    def cannot_tile(self, model: Any) -> str | None:
        refused = self.untileable_family(model)
        if refused is not None:
            return refused
        vae = getattr(model, "first_stage_model", None)
        unet = getattr(getattr(model, "model", None), "diffusion_model", None)
        if vae is None or unet is None or not hasattr(model, "apply_model"):
            return f"the loaded model ({type(model).__name__}) has no VAE/UNet layout this extension knows"
        return None

    def tiled_pass(self, img2img: Any, settings: TileSettings, fallback: Fallback,
                   notify: Notify) -> AbstractContextManager[None]:
        # Samplers of every kind call `apply_model`: one place covers k-diffusion and the timestep samplers.
        model = getattr(img2img, "sd_model", None) or shared.sd_model
        vae, unet = model.first_stage_model, model.model.diffusion_model
        stack = ExitStack()
        stack.enter_context(tiled_vae(getattr(vae, "encoder", None), getattr(vae, "decoder", None), settings,
                                      should_stop=should_stop))
        stack.enter_context(tiled_unet(model, "apply_model", settings, cannot_tile=lambda: _unet_hooked(unet),
                                       on_fallback=fallback))
        return stack


class ReForgeHost(A1111Host):
    """reForge (Panchovix, main): A1111 v1.10's model code with the older Forge's patchers (`ldm_patched`)."""

    kind = "reforge"
    #: seen in the test: a VAE loaded through `sd_vae` stayed after the setting went back
    modules_refused = ("this WebUI (reForge, on the older Forge loader) keeps a VAE once loaded, so the first "
                       "pass's could not be put back")

    def cannot_tile(self, model: Any) -> str | None:
        # Its samplers call the UNet through its patcher, not `apply_model`, so A1111's tiles would
        # silently not be used; its patcher was not tried (reForge is an opt-in test host).
        return ("reForge runs its UNet through its own patcher (ldm_patched), which this extension does not "
                "tile")


#: Forge's diffusion engines (`backend.diffusion_engine.*`, the class of `shared.sd_model`) -> our
#: families: Forge main's and Forge Neo's (docs/flux-and-neo-facts.md §1)
FORGE_ENGINES: dict[str, str] = {
    "StableDiffusion": "sd15", "StableDiffusion2": "sd2", "StableDiffusionXL": "sdxl",
    "StableDiffusionXLRefiner": "sdxl", "StableDiffusion3": "sd3", "Flux": "flux", "Chroma": "chroma",
    "Flux2": "flux2", "QwenImage": "qwen", "Lumina2": "lumina2", "ZImage": "zimage", "Wan": "wan", "Anima": "anima",
}
_FORGE_ENGINE_PACKAGE = "backend.diffusion_engine."


class ForgeHost(WebUIHost):
    """Forge (lllyasviel, main): its own `backend`, models run through patchers, `forge_additional_modules`."""

    kind = "forge"
    max_modules = 4
    module_setting = "forge_additional_modules"
    has_distilled_cfg = True

    def model_family(self, model: Any) -> str:
        if model is None:
            return "sd15"
        engine = type(model)
        if not engine.__module__.startswith(_FORGE_ENGINE_PACKAGE):  # not one of Forge's engines: by its flags
            return super().model_family(model)
        return FORGE_ENGINES.get(engine.__name__, UNKNOWN)

    def guidance_kind(self, model: Any) -> str | None:
        if getattr(model, "use_distilled_cfg_scale", False):
            return "distilled CFG"
        if getattr(model, "use_shift", False):  # Forge Neo only: the same field is the sampling shift
            return "shift"
        return None

    def after_encode(self, img2img: Any) -> None:
        # Forge Neo's Flux.2 (and Kontext / Qwen edit) keeps the encoded image as an edit reference for the
        # next conditioning: the upscaled picture would steer the pass twice. Its own Hires fix clears it too.
        model = getattr(img2img, "sd_model", None)
        if getattr(model, "ini_latent", None) is not None:
            model.ini_latent = None

    def module_files(self) -> dict[str, str]:
        from modules_forge import main_entry

        if not main_entry.module_list:  # filled when its UI is built; an API-only start has not yet
            main_entry.refresh_models()
        return dict(main_entry.module_list)

    def image_module_names(self, fields: Mapping[str, str]) -> list[str]:
        numbered = sorted((int(m.group(1)), value) for key, value in fields.items()
                          if (m := _MODULE_KEY.fullmatch(key)))
        return [value for _, value in numbered] or super().image_module_names(fields)

    def refresh_modules(self) -> None:
        from modules_forge import main_entry

        main_entry.refresh_models()

    def _setting_value(self, names: tuple[str, ...]) -> Any:
        files = self.module_files()
        return [] if names == (BUILT_IN_MODULES,) else [files[name] for name in names]

    def _use_modules(self) -> None:
        """Forge loads the modules with its next job's model (a no-op reload when they equal the loaded ones)."""
        from modules_forge import main_entry

        main_entry.refresh_model_loading_parameters()

    def load_checkpoint_back(self, before: Any) -> None:
        # Forge loads what its (restored) settings say at the next job; loading now keeps the next
        # batch of this job, and our own routes' next image, on the first pass's model.
        from modules import sd_models

        sd_models.forge_model_reload()

    def after_nested_job(self, outer: Any) -> None:
        """Forge patches a copy of the model per sampling: nothing of the outer job's is taken."""

    def cannot_tile(self, model: Any) -> str | None:
        return self.untileable_family(model)

    def tiled_pass(self, img2img: Any, settings: TileSettings, fallback: Fallback,
                   notify: Notify) -> AbstractContextManager[None]:
        return _forge_tiled(img2img, settings, fallback, notify)


class ForgeNeoHost(ForgeHost):
    """Forge Neo (Haoming02/sd-webui-forge-classic, branch neo): Forge's backend with more engines (Flux.2,
    Qwen-Image, Lumina 2, Z-Image, Wan, Anima) and without SD2/SD3."""

    kind = "forge-neo"

    def one_image_per_pass(self, model: Any) -> bool:
        # its Qwen-Image, Anima and Wan engines encode only the first image of a batch (5-D video latents)
        return self.model_family(model) in ("qwen", "anima", "wan")


@contextmanager
def _forge_tiled(img2img: Any, settings: TileSettings, fallback: Fallback, notify: Notify) -> Iterator[None]:
    """Forge's own VAE tiling switched on (the switch its "Never OOM Integrated" sets), and our tiled UNet
    as the UNet patcher's model-function wrapper for `img2img`'s sampling.

    Forge copies its patchers from `forge_objects_after_applying_lora` at the start of each sampling
    (after LoRAs), and extensions patch that copy in process_before_every_sampling. So a clone of
    that UNet patcher with the wrapper stands in for it during `sample`. An extension that sets its
    own wrapper in the pass (MultiDiffusion Integrated) replaces ours: its tiles then run the UNet,
    and the result says so."""
    from backend import memory_management

    tiler = UNetTiler(settings, on_fallback=fallback)

    def wrapper(apply_model: Callable[..., Any], args: dict[str, Any]) -> Any:
        # Forge's `c` carries `transformer_options`, read by its UNet patches (token merging, FreeU,
        # IP-Adapter...): the chunks' cond/uncond marks and row indices follow the tiles stacked k deep;
        # its sigmas are per image and stay as they are.
        cond = dict(args["c"])
        options = cond.pop("transformer_options", None)
        rows = args["input"].shape[0]

        def model(x: Any, t: Any, c: dict[str, Any]) -> Any:
            extra = {} if options is None else {"transformer_options": _forge_options_for(options, x.shape[0] // rows,
                                                                                          rows)}
            return apply_model(x, t, **c, **extra)

        return tiler(model, args["input"], args["timestep"], cond)

    sample = img2img.sample

    def sample_tiled(*args: Any, **kwargs: Any) -> Any:
        model = img2img.sd_model
        base = model.forge_objects_after_applying_lora
        objects = base.shallow_copy()
        objects.unet = objects.unet.clone()
        objects.unet.set_model_unet_function_wrapper(wrapper)
        model.forge_objects_after_applying_lora = objects
        try:
            result = sample(*args, **kwargs)
        finally:
            model.forge_objects_after_applying_lora = base
        if tiler.calls == 0:
            notify(Advice("unet_wrapped_elsewhere", "warning", "tiled",
                          "The second pass's UNet ran through another extension's wrapper, not this extension's "
                          "tiles (Forge's MultiDiffusion Integrated, when on, tiles it its own way); the VAE stayed "
                          "tiled."))
        return result

    tiled_before = memory_management.VAE_ALWAYS_TILED
    memory_management.VAE_ALWAYS_TILED = True
    img2img.sample = sample_tiled
    try:
        yield
    finally:
        img2img.sample = sample
        memory_management.VAE_ALWAYS_TILED = tiled_before


def _forge_options_for(options: dict[str, Any], k: int, rows: int) -> dict[str, Any]:
    """Forge's transformer options for `k` tiles stacked in one call of `k * rows` rows."""
    if k == 1:
        return options
    tiled = dict(options)
    if "cond_or_uncond" in tiled:
        tiled["cond_or_uncond"] = list(tiled["cond_or_uncond"]) * k
    if hasattr(tiled.get("cond_mark"), "repeat"):
        tiled["cond_mark"] = tiled["cond_mark"].repeat(k)
    for key in ("cond_indices", "uncond_indices"):
        if isinstance(tiled.get(key), list):
            tiled[key] = [index + tile * rows for tile in range(k) for index in tiled[key]]
    return tiled


def _unet_hooked(unet: Any) -> str | None:
    """Why tiles cannot go through the UNet as it is now: another extension (ControlNet, regional
    prompting) replaced its forward for the whole picture."""
    if "forward" in vars(unet):
        owner = getattr(vars(unet)["forward"], "__module__", None) or "another extension"
        return f"the UNet is hooked by {owner} (e.g. ControlNet), whose inputs cover the whole picture"
    return None


def _forge_neo() -> Host | None:
    """Forge Neo: Forge's `main_entry` and its model-family presets (`modules_forge.presets`), which Forge lacks."""
    try:
        from modules_forge import main_entry, presets  # noqa: F401
    except ImportError:
        return None
    return ForgeNeoHost()


def _forge() -> Host | None:
    """Forge: its own `backend` package and `modules_forge.main_entry` (reForge has neither)."""
    try:
        from modules_forge import main_entry  # noqa: F401
    except ImportError:
        return None
    return ForgeHost()


def _reforge() -> Host | None:
    """reForge: the older Forge design, `modules_forge.forge_loader` over A1111's model code."""
    try:
        from modules_forge import forge_loader  # noqa: F401
    except ImportError:
        return None
    return ReForgeHost()


#: Tried in order; the first that recognises its WebUI wins, and A1111 is what remains.
DETECTORS: tuple[Callable[[], Host | None], ...] = (_forge_neo, _forge, _reforge)


def detect() -> Host:
    """The WebUI this process is, asked once at start."""
    for detector in DETECTORS:
        host = detector()
        if host is not None:
            return host
    return A1111Host()
