"""The core's Backend: the second pass as the WebUI's own img2img processing."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageColor

from ..advice import Advice
from ..errors import FieldError, Interrupted, OutOfMemory, ParamsError, SecondPassFailed, is_out_of_memory
from ..infotext import GenerationInfo
from ..lowvram import MemoryFacts, TileSettings, TilingPolicy, UNetTiler, tiled_unet, tiled_vae
from ..params import BUILT_IN_MODULES, HiresParams
from ..plan import Plan
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
    #: the pass's VAE / text-encoder files (`HiresParams.modules`; for an existing image, else its own)
    modules: tuple[str, ...] = ()
    #: what the pass could not repeat (an image's checkpoint or VAE that is not here), for its result
    notes: tuple[Advice, ...] = ()

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
            override_settings={**_kept_settings(getattr(p, "override_settings", None) or {}, params),
                               **checkpoint_override(params)},
            outpath_samples=p.outpath_samples,
            scripts=scripts,
            script_args=list(p.script_args or []),
            refiner_checkpoint=refiner[0],
            refiner_switch_at=refiner[1],
            is_api=bool(getattr(p, "is_api", False)),
            modules=params.modules,
        )

    @classmethod
    def from_info(cls, info: GenerationInfo, params: HiresParams) -> Generation:
        """From an image's PNG info, with the hires overrides of `params`."""
        if not info.prompt and not info.fields:
            raise ParamsError([FieldError("image", "no PNG info", "an image made by the WebUI (its parameters "
                                          "text is read for prompt and seed)")])
        fields = info.fields
        override_settings: dict[str, Any] = {}
        notes: list[Advice] = []
        if "Model" in fields and not params.checkpoint:
            title = compat.find_checkpoint(fields["Model"])
            if title is None:
                notes.append(Advice("image_checkpoint_missing", "warning", "checkpoint",
                                    f"The image's checkpoint {fields['Model']} is not here: the second pass ran "
                                    f"with the WebUI's, {compat.opt('sd_model_checkpoint', '(none)')}."))
            else:
                override_settings["sd_model_checkpoint"] = title
        if _number(fields, "Clip skip", int, 0):
            override_settings["CLIP_stop_at_last_layers"] = _number(fields, "Clip skip", int, 1)
        override_settings.update(checkpoint_override(params))
        check_modules(params)
        modules = params.modules
        if not modules:
            modules, missing = image_modules(fields)
            unsupported = compat.modules_unsupported()
            if unsupported and modules:
                notes.append(Advice("image_modules_unsupported", "warning", "modules",
                                    f"The image's VAE / text encoder {', '.join(modules)} was not used: "
                                    f"{unsupported}; the second pass ran with the WebUI's setting."))
                modules = ()
            if missing:
                notes.append(Advice("image_modules_missing", "warning", "modules",
                                    f"The image's VAE / text encoder {', '.join(missing)} is not here: the second "
                                    "pass ran with the WebUI's setting."))
        for note in notes:
            log.warning("hires upscale: %s", note.message)
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
            modules=modules,
            notes=tuple(notes),
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


#: Forge names each module of an image's pass in its PNG info as "Module 1", "Module 2"...
_MODULE_KEY = re.compile(r"Module (\d+)")


def image_modules(fields: Mapping[str, str]) -> tuple[tuple[str, ...], list[str]]:
    """The VAE / text-encoder files an image's PNG info names, as this WebUI's file names, and the
    names it does not have. A1111 writes its VAE's file name ("VAE"); Forge the stem of each module
    ("Module N"). An image that names none gives none: the pass keeps the WebUI's setting."""
    numbered = sorted((int(m.group(1)), value) for key, value in fields.items() if (m := _MODULE_KEY.fullmatch(key)))
    named = [value for _, value in numbered] if compat.several_modules() and numbered else []
    if not named and fields.get("VAE"):
        named = [fields["VAE"]]
    known = compat.module_names()
    by_stem = {os.path.splitext(name)[0]: name for name in known}
    found: list[str] = []
    missing: list[str] = []
    for name in named:
        match = name if name in known else by_stem.get(name) or by_stem.get(os.path.splitext(name)[0])
        if match is None:
            missing.append(name)
        else:
            found.append(match)
    return tuple(dict.fromkeys(found)), missing


def check_modules(params: HiresParams) -> None:
    """Refuse VAE / text-encoder files this WebUI does not have, or more than it takes."""
    if not params.modules:
        return
    unsupported = compat.modules_unsupported()
    if unsupported:
        raise ParamsError([FieldError("modules", list(params.modules), f"[] here: {unsupported}")])
    if params.modules == (BUILT_IN_MODULES,):
        return
    known = compat.module_names()
    unknown = [name for name in params.modules if name not in known]
    several = compat.several_modules()
    if unknown or (len(params.modules) > 1 and not several):
        what = "file names" if several else "one file name (this WebUI takes a single VAE)"
        raise ParamsError([FieldError("modules", list(params.modules),
                                      f"[] (the same as the first pass), [{BUILT_IN_MODULES!r}] or {what} from "
                                      f"the WebUI's {'VAE and text_encoder folders' if several else 'VAE folder'}: "
                                      + (", ".join(known) or "(there are none)"))])


def _kept_settings(settings: dict[str, Any], params: HiresParams) -> dict[str, Any]:
    """The first pass's setting overrides for the second pass, less its VAE / text encoders where
    the pass has its own (`compat.second_pass_modules` sets those; an override would win)."""
    if not params.modules:
        return dict(settings)
    return {key: value for key, value in settings.items() if key not in compat.MODULE_SETTINGS}


def _number(fields: dict[str, str], key: str, kind: type, default: Any) -> Any:
    """A number from infotext, or `default` when it is absent or not a number (hand-edited PNG info)."""
    try:
        return kind(fields[key])
    except (KeyError, ValueError):
        return default


class WebUIBackend:
    """The second pass as a WebUI img2img job (same prompt, seed and model; exact hires steps).

    `generations[n]` is what image n of `second_pass` repeats of its first pass; `tiling` decides
    when the pass runs tiled (the WebUI session's one policy). A hires checkpoint stays loaded after
    the pass: the caller loads the first pass's back once its images are done
    (`compat.first_pass_checkpoint_kept`), so a run of images loads it once, not once per image.
    `outer` is the job whose images these are, if any: the nested pass leaves it as it was.
    """

    def __init__(self, generations: list[Generation], tiling: TilingPolicy, outer: Any = None) -> None:
        self.generations = generations
        self.tiling = tiling
        self.outer = outer
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
        for note in dict.fromkeys(note for generation in self.generations for note in generation.notes):
            notify(note)
        done = None
        if self.tiling.batch_together(plan.params.tiled, plan.target, len(images), _memory()):
            try:
                done = self._pass(images, self.generations, plan, notify)
            except OutOfMemory:
                width, height = plan.target
                notify(Advice("batch_after_oom", "warning", "second pass",
                              f"The batch's second pass ran out of memory at {len(images)}x {width}x{height}; "
                              "its images ran one at a time."))
        if done is None:
            done = [self._pass([image], [generation], plan, notify)[0]
                    for image, generation in zip(images, self.generations, strict=True)]
        progress(1, 1)
        return done

    def _pass(self, images: list[Image.Image], generations: list[Generation], plan: Plan,
              notify: Callable[[Advice], None]) -> list[Image.Image]:
        """One img2img over `images`, tiled where the policy says, again tiled after running out of
        memory where it says so."""
        mode = plan.params.tiled
        width, height = plan.target
        # a WebUI whose model this extension cannot tile (Forge) runs every pass untiled, said once
        untileable = compat.tiling_targets(None)
        untileable = untileable if isinstance(untileable, str) else None
        tiled = self.tiling.tiled(mode, plan.target, len(images), _memory())
        try:
            processed = self._img2img(images, generations, plan, tiled=tiled, untileable=untileable, notify=notify)
        except OutOfMemory:
            if untileable or not self.tiling.retry_tiled(mode, plan.target, len(images), was_tiled=tiled):
                raise
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
            raise SecondPassFailed(f"the WebUI's img2img returned {len(processed.images)} of {len(images)} images "
                                   "(an extension running in the pass may have stopped it; see the console)")
        # extensions may append their own pictures (ControlNet's detected maps) after ours
        return processed.images[:len(images)]

    def _img2img(self, images: list[Image.Image], generations: list[Generation], plan: Plan, *, tiled: bool,
                 untileable: str | None, notify: Callable[[Advice], None]) -> Any:
        """One img2img job over `images`; `untileable` is why this WebUI's model cannot be tiled, if so."""
        from modules import processing

        first, params = generations[0], plan.params
        width, height = plan.target
        latent = plan.upscaler_kind == "latent"
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
            # 3 = the WebUI's "Just resize (latent upscale)": the image is encoded at its own size and
            # the latent resized (here with the latent mode's own interpolation: `_latent_resized`).
            resize_mode=3 if latent else 0,
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
        img2img.scripts = first.scripts if first.scripts is not None else carried.empty_runner()
        img2img.script_args = first.script_args
        compat.add_job()
        compat.report_progress(f"Hires upscale: {plan.pass_label}second pass, {img2img.steps} steps at {width}x{height}"
                               + (f", {len(images)} images" if len(images) > 1 else "")
                               + (", tiled" if tiled else ""))
        with ExitStack() as installed:
            if latent:
                _latent_resized(img2img, compat.latent_interpolation(params.upscaler))
            if tiled:  # where `untileable`, the init says so in the result once
                _tile_from_init(img2img, installed, TileSettings.for_tile_size(params.tile_size), notify)
            installed.enter_context(compat.second_pass_modules(first.modules))
            installed.enter_context(compat.outer_job_kept(self.outer, list(img2img.override_settings)))
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


def _memory() -> MemoryFacts:
    return MemoryFacts(compat.free_gpu_memory(), compat.vae_dtype_bytes())


def _one_or_each(values: list[Any], *, distinct: bool = False) -> Any:
    """A single value where the WebUI's own arithmetic gives every image the same (prompts) or the
    same progression, else the list: extensions read `p.prompt` and `p.seed` as scalars."""
    if len(values) == 1:
        return values[0]
    if not distinct and all(v == values[0] for v in values):
        return values[0]
    return list(values)


def _latent_resized(img2img: Any, interpolation: tuple[str, bool]) -> None:
    """Resize the init latent with the latent mode's own interpolation, as the built-in Hires fix
    does: img2img's "latent upscale" resize is bilinear whatever the mode. Its init runs at the
    images' own size, so its resize is the identity, and the latent is resized here after it."""
    import torch

    init = img2img.init
    mode, antialias = interpolation

    def init_resized(*args: Any, **kwargs: Any) -> Any:
        width, height = img2img.width, img2img.height
        source = img2img.init_images[0]
        img2img.width, img2img.height = source.width, source.height
        try:
            outcome = init(*args, **kwargs)
        finally:
            img2img.width, img2img.height = width, height
        def resized(latent: Any) -> Any:
            return torch.nn.functional.interpolate(latent, size=(height // 8, width // 8), mode=mode,
                                                   antialias=antialias)

        img2img.init_latent = resized(img2img.init_latent)
        conditioning = getattr(img2img, "image_conditioning", None)
        if conditioning is not None and conditioning.dim() == 4 and conditioning.shape[-1] > 1:
            # an inpainting model's conditioning is spatial: it follows the latent
            img2img.image_conditioning = resized(conditioning)
        return outcome

    img2img.init = init_resized


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

        if isinstance(targets, compat.ForgeTilingTargets):
            _tile_on_forge(img2img, installed, settings, fallback, notify)
            return init(*args, **kwargs)
        installed.enter_context(tiled_vae(targets.encoder, targets.decoder, settings,
                                          should_stop=compat.should_stop))
        installed.enter_context(tiled_unet(targets.denoiser, "apply_model", settings,
                                           cannot_tile=lambda: compat.unet_hooked(targets.unet),
                                           on_fallback=fallback))
        return init(*args, **kwargs)

    img2img.init = init_tiled


def _tile_on_forge(img2img: Any, installed: ExitStack, settings: TileSettings, fallback: Callable[[str], None],
                   notify: Callable[[Advice], None]) -> None:
    """Forge: its own VAE tiling switched on, and our tiled UNet as its UNet patcher's model-function
    wrapper. An extension that sets its own wrapper in the pass (Forge's MultiDiffusion Integrated)
    replaces ours: its tiles then run the UNet, and the result says so."""
    # Forge's `c` carries `transformer_options`, read by its UNet patches (token merging, FreeU,
    # IP-Adapter...): the chunks' cond/uncond marks and row indices follow the tiles stacked k deep;
    # its sigmas are per image and stay as they are.
    tiler = UNetTiler(settings, on_fallback=fallback)

    def wrapper(apply_model: Callable[..., Any], args: dict[str, Any]) -> Any:
        cond = dict(args["c"])
        options = cond.pop("transformer_options", None)
        rows = args["input"].shape[0]

        def model(x: Any, t: Any, c: dict[str, Any]) -> Any:
            extra = {} if options is None else {"transformer_options": _forge_options_for(options, x.shape[0] // rows,
                                                                                          rows)}
            return apply_model(x, t, **c, **extra)

        return tiler(model, args["input"], args["timestep"], cond)

    def sample(*sample_args: Any, **kwargs: Any) -> Any:
        result = wrapped_sample(*sample_args, **kwargs)
        if tiler.calls == 0:
            message = ("The second pass's UNet ran through another extension's wrapper, not this extension's "
                       "tiles (Forge's MultiDiffusion Integrated, when on, tiles it its own way); the VAE stayed "
                       "tiled.")
            log.warning("hires upscale: %s", message)
            notify(Advice("unet_wrapped_elsewhere", "warning", "tiled", message))
        return result

    installed.enter_context(compat.forge_vae_tiled())
    installed.enter_context(compat.forge_unet_wrapped(img2img, wrapper))
    wrapped_sample = img2img.sample
    img2img.sample = sample


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
