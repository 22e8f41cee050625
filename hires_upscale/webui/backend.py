"""The core's Backend and upscalers, implemented with the WebUI's own processing."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageColor

from ..advice import Advice
from ..errors import FieldError, Interrupted, ModelLoadError, OutOfMemory, ParamsError, is_out_of_memory
from ..infotext import GenerationInfo
from ..lowvram import TileSettings, needs_tiling, tiled_unet, tiled_vae
from ..params import HiresParams, upscaler_kind
from ..plan import Plan
from ..upscaler import ImageUpscaler, LanczosUpscaler, ModelUpscaler, load_model
from . import carried, compat

log = logging.getLogger("hires_upscale")


@dataclass
class Generation:
    """What the second pass of one image repeats from its first pass, with the run's overrides applied."""

    prompt: str
    negative_prompt: str
    seed: int
    subseed: int = -1
    subseed_strength: float = 0.0
    sampler_name: str | None = None
    scheduler: str | None = None
    cfg_scale: float = 7.0
    steps: int = 20
    #: WebUI settings for the pass: the checkpoint (the hires one, or an existing image's own) and CLIP skip
    override_settings: dict[str, Any] = field(default_factory=dict)
    outpath_samples: str | None = None
    #: the first pass's extensions for the second pass (carried.second_pass_runner), with their arguments
    scripts: Any = None
    script_args: list[Any] = field(default_factory=list)
    #: the refiner of the second pass, where the WebUI's "Hires fix: which pass to enable refiner for" says so
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    is_api: bool = False

    @classmethod
    def of_images(cls, p: Any, indices: list[int], params: HiresParams) -> list[Generation]:
        """Images `indices` of a job, sharing one runner of the first pass's extensions."""
        scripts = carried.second_pass_runner(p.scripts, str(compat.opt(carried.KEPT_OUT_OPTION,
                                                                       carried.DEFAULT_KEPT_OUT)))
        return [cls.from_processing(p, index, params, scripts) for index in indices]

    @classmethod
    def from_processing(cls, p: Any, index: int, params: HiresParams, scripts: Any) -> Generation:
        """Image `index` of a job: its prompt (LoRA tags and styles included), seed and settings,
        with the hires overrides of `params`; `scripts` runs its extensions in the second pass."""
        refiner = getattr(p, "_hires_upscale_refiner", None) or (None, None)
        return cls(
            prompt=params.second_pass_prompt(p.all_prompts[index]),
            negative_prompt=params.second_pass_negative_prompt(p.all_negative_prompts[index]),
            seed=params.second_pass_seed(p.all_seeds[index], index),
            subseed=p.all_subseeds[index],
            subseed_strength=p.subseed_strength,
            sampler_name=p.sampler_name,
            scheduler=getattr(p, "scheduler", None),
            cfg_scale=params.second_pass_cfg_scale(p.cfg_scale),
            steps=p.steps,
            override_settings={**(getattr(p, "override_settings", None) or {}), **checkpoint_override(params)},
            outpath_samples=p.outpath_samples,
            scripts=scripts,
            script_args=list(p.script_args or []),
            refiner_checkpoint=refiner[0],
            refiner_switch_at=refiner[1],
            is_api=bool(getattr(p, "is_api", False)),
        )

    @classmethod
    def from_info(cls, info: GenerationInfo, params: HiresParams) -> Generation:
        """From an image's PNG info, with the hires overrides of `params`."""
        if not info.prompt and not info.fields:
            raise ParamsError([FieldError("image", "no PNG info", "an image made by the WebUI (its parameters "
                                          "text is read for prompt and seed)")])
        fields = info.fields
        override_settings: dict[str, Any] = {}
        if "Model" in fields:
            title = compat.find_checkpoint(fields["Model"])
            if title is None:
                log.warning("hires upscale: checkpoint %r of the image is not here; using the loaded one",
                            fields["Model"])
            else:
                override_settings["sd_model_checkpoint"] = title
        if _number(fields, "Clip skip", int, 0):
            override_settings["CLIP_stop_at_last_layers"] = _number(fields, "Clip skip", int, 1)
        override_settings.update(checkpoint_override(params))
        return cls(
            prompt=params.second_pass_prompt(info.prompt),
            negative_prompt=params.second_pass_negative_prompt(info.negative_prompt),
            seed=params.second_pass_seed(info.seed if info.seed is not None else -1, 0),
            subseed=_number(fields, "Variation seed", int, -1),
            subseed_strength=_number(fields, "Variation seed strength", float, 0.0),
            sampler_name=fields.get("Sampler"),
            scheduler=fields.get("Schedule type"),
            cfg_scale=params.second_pass_cfg_scale(info.cfg_scale or 7.0),
            steps=info.steps or 20,
            override_settings=override_settings,
        )


def checkpoint_override(params: HiresParams) -> dict[str, str]:
    """The WebUI setting that loads the hires checkpoint for the pass; none when it is the same."""
    if not params.checkpoint:
        return {}
    title = compat.find_checkpoint(params.checkpoint)
    if title is None:
        raise ParamsError([FieldError("checkpoint", params.checkpoint,
                                      "empty (the same as the first pass) or one of the WebUI's checkpoints: "
                                      + ", ".join(compat.checkpoint_titles()))])
    return {"sd_model_checkpoint": title}


def _number(fields: dict[str, str], key: str, kind: type, default: Any) -> Any:
    """A number from infotext, or `default` when it is absent or not a number (hand-edited PNG info)."""
    try:
        return kind(fields[key])
    except (KeyError, ValueError):
        return default


class WebUIBackend:
    """The second pass as a WebUI img2img job (same prompt, seed and model; exact hires steps).

    `generations[n]` is what image n of `second_pass` repeats of its first pass. A hires checkpoint
    stays loaded after the pass: the caller loads the first pass's back once its images are done
    (`compat.first_pass_checkpoint_kept`), so a run of images loads it once, not once per image.
    """

    def __init__(self, generations: list[Generation]) -> None:
        self.generations = generations
        self.model_family = compat.model_family()

    @property
    def background(self) -> str:
        """What the pipeline flattens transparency onto before img2img: the WebUI's own setting."""
        color = str(compat.opt("img2img_background_color", "#ffffff") or "#ffffff")
        try:
            ImageColor.getrgb(color)
        except ValueError:  # a hand-edited config must not break the run
            return "#ffffff"
        return color

    def second_pass(
        self, images: list[Image.Image], plan: Plan, *, progress: Callable[[int, int], None],
        should_stop: Callable[[], bool], notify: Callable[[Advice], None] = lambda advice: None,
    ) -> list[Image.Image]:
        if should_stop():
            raise Interrupted("stopped before the second pass")
        if len(images) != len(self.generations):
            raise ValueError(f"{len(images)} images for {len(self.generations)} generations")
        done = None
        if len(images) > 1 and self._batch_fits(plan, len(images)):
            try:
                done = self._auto_tiled(images, self.generations, plan, notify)
            except OutOfMemory:
                width, height = plan.target
                notify(Advice("batch_after_oom", "warning", "second pass",
                              f"The batch's second pass ran out of memory at {len(images)}x {width}x{height}; "
                              "its images ran one at a time."))
        if done is None:
            done = [self._auto_tiled([image], [generation], plan, notify)[0]
                    for image, generation in zip(images, self.generations, strict=True)]
        progress(1, 1)
        return done

    @staticmethod
    def _batch_fits(plan: Plan, count: int) -> bool:
        """The whole batch in one untiled pass, unless tiling is asked for or free memory says no."""
        if plan.params.tiled == "on":
            return False
        width, height = plan.target
        return not needs_tiling(width, height * count, compat.free_gpu_memory(), dtype_bytes=compat.vae_dtype_bytes())

    def _auto_tiled(self, images: list[Image.Image], generations: list[Generation], plan: Plan,
                    notify: Callable[[Advice], None]) -> list[Image.Image]:
        """One img2img over `images`, tiled as `plan.params.tiled` says, again tiled after running
        out of memory in auto mode."""
        global _out_of_memory_from
        mode = plan.params.tiled
        width, height = plan.target
        # a WebUI whose model this extension cannot tile (Forge) runs every pass untiled, said once
        untileable = compat.tiling_targets(None)
        untileable = untileable if isinstance(untileable, str) else None
        tiled = mode == "on" or (mode == "auto" and len(images) == 1 and (
            width * height >= _out_of_memory_from
            or needs_tiling(width, height, compat.free_gpu_memory(), dtype_bytes=compat.vae_dtype_bytes())))
        try:
            processed = self._img2img(images, generations, plan, tiled=tiled, untileable=untileable, notify=notify)
        except OutOfMemory:
            if mode != "auto" or tiled or untileable or len(images) > 1:
                raise
            _out_of_memory_from = min(_out_of_memory_from, width * height)
            message = (f"The second pass ran out of memory at {width}x{height}; it ran again tiled (tiled VAE and "
                       "UNet), and will start tiled at this size from now on.")
            log.warning("hires upscale: %s", message)
            notify(Advice("tiled_after_oom", "warning", "tiled", message))
            processed = self._img2img(images, generations, plan, tiled=True, untileable=None, notify=notify)
        if compat.should_stop():
            # A sampler stopped mid-way leaves half-denoised images: keep the upscaled ones instead.
            raise Interrupted("stopped during the second pass")
        refiner = (getattr(processed, "extra_generation_params", None) or {}).get("Refiner")
        if refiner:
            setting = compat.opt("hires_fix_refiner_pass")
            notify(Advice("refiner", "info", "second pass", f"The second pass switched to the refiner {refiner} "
                          f"(\"Hires fix: which pass to enable refiner for\" is {setting})."))
        if len(processed.images) < len(images):
            raise RuntimeError(f"the WebUI's img2img returned {len(processed.images)} of {len(images)} images")
        # extensions may append their own pictures (ControlNet's detected maps) after ours
        return processed.images[:len(images)]

    def _img2img(self, images: list[Image.Image], generations: list[Generation], plan: Plan, *, tiled: bool,
                 untileable: str | None, notify: Callable[[Advice], None]) -> Any:
        """One img2img job over `images`; `untileable` is why this WebUI's model cannot be tiled, if so."""
        from modules import processing

        first, params = generations[0], plan.params
        width, height = plan.target
        img2img = compat.make_img2img(
            outpath_samples=first.outpath_samples,
            prompt=_one_or_each([g.prompt for g in generations]),
            negative_prompt=_one_or_each([g.negative_prompt for g in generations]),
            styles=[],  # the prompts already carry the styles
            seed=_one_or_each([g.seed for g in generations], distinct=True),
            subseed=_one_or_each([g.subseed for g in generations], distinct=True),
            subseed_strength=first.subseed_strength,
            sampler_name=params.sampler or first.sampler_name,
            scheduler=params.scheduler or first.scheduler,
            cfg_scale=first.cfg_scale,
            steps=plan.steps or first.steps,
            width=width,
            height=height,
            init_images=images,
            # 3 = the WebUI's "Just resize (latent upscale)": the image is encoded at its
            # own size and the latent is resized, which is what latent upscalers mean.
            resize_mode=3 if plan.upscaler_kind == "latent" else 0,
            denoising_strength=params.denoise,
            batch_size=len(images),
            n_iter=1,
            do_not_save_samples=True,
            do_not_save_grid=True,
            refiner_checkpoint=first.refiner_checkpoint,
            refiner_switch_at=first.refiner_switch_at,
            # exactly `steps` steps, not steps x denoise
            override_settings={**first.override_settings, "img2img_fix_steps": True},
        )
        img2img.is_api = first.is_api
        # Both inner-pass marks: ours keeps this extension out, ADetailer's keeps ADetailer out
        # should a user take it off the kept-out list.
        img2img._hires_upscale_inner = True
        img2img._ad_inner = True
        img2img.scripts = first.scripts
        img2img.script_args = first.script_args
        compat.add_job()
        compat.report_progress(f"Hires upscale: second pass, {img2img.steps} steps at {width}x{height}"
                               + (f", {len(images)} images" if len(images) > 1 else "")
                               + (", tiled" if tiled else ""))
        with ExitStack() as installed:
            if tiled:  # where `untileable`, the init says so in the result once
                _tile_from_init(img2img, installed, TileSettings.for_tile_size(params.tile_size), notify)
            try:
                return processing.process_images(img2img)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                compat.release_memory()  # before anything else runs, tiled or not
                if untileable:
                    remedy = f"set a smaller target (this extension cannot tile it here: {untileable})"
                elif tiled:
                    remedy = "even tiled: set a smaller tile size or a smaller target"
                else:
                    remedy = "set Tiled to auto or on, or a smaller target"
                raise OutOfMemory("second pass", (width, height), remedy) from error
            finally:
                img2img.close()


def _one_or_each(values: list[Any], *, distinct: bool = False) -> Any:
    """A single value where the WebUI's own arithmetic gives every image the same (prompts) or the
    same progression, else the list: extensions read `p.prompt` and `p.seed` as scalars."""
    if len(values) == 1:
        return values[0]
    if not distinct and all(v == values[0] for v in values):
        return values[0]
    return list(values)


#: The fewest target pixels whose untiled second pass ran out of memory in this WebUI session:
#: "auto" tiles every target at least that large from then on.
_out_of_memory_from: float = math.inf


def _tile_from_init(img2img: Any, installed: ExitStack, settings: TileSettings,
                    notify: Callable[[Advice], None]) -> None:
    """Tile the VAE and the UNet of the model img2img runs on, from its `init` (after any
    checkpoint override has loaded that model) until `installed` closes."""
    init = img2img.init

    def init_tiled(*args: Any, **kwargs: Any) -> Any:
        targets = compat.tiling_targets(img2img)
        if isinstance(targets, str):
            notify(Advice("tiling_unavailable", "warning", "tiled", f"The second pass ran untiled: {targets}."))
            return init(*args, **kwargs)

        def fallback(reason: str) -> None:  # heard once per pass
            log.warning("hires upscale: a UNet call ran full frame: %s", reason)
            notify(Advice("unet_full_frame", "warning", "tiled",
                          f"The second pass's UNet ran untiled (the VAE stayed tiled): {reason}."))

        installed.enter_context(tiled_vae(targets.encoder, targets.decoder, settings,
                                          should_stop=compat.should_stop))
        installed.enter_context(tiled_unet(targets.denoiser, "apply_model", settings,
                                           cannot_tile=lambda: compat.unet_hooked(targets.unet),
                                           on_fallback=fallback))
        return init(*args, **kwargs)

    img2img.init = init_tiled


class HostUpscaler:
    """A WebUI upscaler our engine does not run (LDSR, SwinIR, ScuNET, Nearest...), through its own code."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.name = data.name

    def upscale(self, image: Image.Image, size: tuple[int, int], *, progress=None, should_stop=None) -> Image.Image:
        if should_stop is not None and should_stop():
            raise Interrupted("stopped before upscaling")
        scale = max(size[0] / image.width, size[1] / image.height)
        result = self.data.scaler.upscale(image.convert("RGB"), scale, self.data.data_path)
        if scale > 1 and result.size == image.size:
            # The WebUI's upscalers log their failure and hand the input back: say it.
            raise RuntimeError(f"the WebUI's upscaler {self.name} returned the image unchanged "
                               "(see the console for its error)")
        if progress is not None:
            progress(1, 1)
        return result.resize(size, Image.Resampling.LANCZOS) if result.size != size else result


def _engine_upscalers() -> list[str]:
    """Names of the WebUI's upscalers whose local model file our engine runs."""
    return [u.name for u in compat.host_upscalers() if compat.engine_model_path(u) is not None]


def upscaler_choices() -> list[str]:
    """Upscaler names for the dropdown: models our engine runs, other model upscalers,
    latent modes, then Lanczos / Nearest / None."""
    hosts = compat.host_upscalers()
    engine = _engine_upscalers()
    others = [u.name for u in hosts if u.name not in engine and upscaler_kind(u.name) == "model"]
    plain = [u.name for u in hosts if upscaler_kind(u.name) in ("pixel", "none")]
    names = engine + others + compat.latent_modes() + plain
    return list(dict.fromkeys(names)) or ["Lanczos"]


def default_upscaler() -> str:
    """The settings' default upscaler, else the first model file our engine runs, else Lanczos."""
    configured = compat.opt("hires_upscale_default_upscaler", "")
    if configured and configured in upscaler_choices():
        return configured
    engine = _engine_upscalers()
    return engine[0] if engine else "Lanczos"


def engine_settings(params: HiresParams) -> dict[str, Any]:
    """Tile size and precision for our engine: run parameters, then flags, then settings."""
    tile = params.tile_size or compat.cmd_option("hires_upscale_tile_size") or compat.opt("hires_upscale_tile_size", 0)
    fp32 = bool(compat.cmd_option("hires_upscale_fp32", False) or compat.opt("hires_upscale_fp32", False))
    return {"tile_size": int(tile or 0), "precision": "fp32" if fp32 else "auto"}


def load_engine_model(path: Path, params: HiresParams) -> ModelUpscaler:
    """A local model file on our engine, where and how the WebUI's settings say; a file the
    WebUI's safe unpickler refuses is reported with that reason, not spandrel's confusion."""
    try:
        return load_model(path, device=compat.upscaler_device(), **engine_settings(params))
    except ModelLoadError as error:
        refusal = compat.safe_unpickle_refusal(path)
        if refusal is not None:
            raise ModelLoadError(path, refusal) from error
        raise


def upscaler_for(params: HiresParams) -> Callable[[str], ImageUpscaler]:
    """Maps an upscaler name to our engine (local ESRGAN-family files) or the WebUI's upscaler."""

    def resolve(name: str) -> ImageUpscaler:
        for data in compat.host_upscalers():
            if data.name != name:
                continue
            path = compat.engine_model_path(data)
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
