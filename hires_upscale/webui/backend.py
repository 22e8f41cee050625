"""The core's Backend: the second pass as the WebUI's own img2img processing."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from modules import processing, shared
from PIL import Image, ImageColor

from ..advice import Advice
from ..errors import FieldError, Interrupted, OutOfMemory, ParamsError, SecondPassFailed, is_out_of_memory
from ..memory import Attempt, MemoryFacts, TileSettings, TilingPolicy
from ..metadata import ImageGeneration
from ..params import BUILT_IN_MODULES, MAX_SEED, HiresParams
from ..plan import Plan
from . import carried, compat, progress
from .hosts import Host
from .job import HiresJob, mark_inner
from .outputs import data_path

log = logging.getLogger("hires_upscale")


@dataclass(frozen=True)
class Session:
    """One WebUI session's host and tiling policy: made once by the script file at start, handed to
    the hooks, the tab and the routes."""

    host: Host
    tiling: TilingPolicy = field(default_factory=TilingPolicy)


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
    #: Forge's `distilled_cfg_scale` (Flux dev's guidance, Forge Neo's shift); None: the host's default
    distilled_cfg: float | None = None
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
    def of_images(cls, p: Any, indices: Sequence[int], job: HiresJob, host: Host) -> list[Generation]:
        """Images `indices` of a job, sharing one runner of the first pass's extensions."""
        setting = str(getattr(shared.opts, carried.KEPT_OUT_OPTION, carried.DEFAULT_KEPT_OUT))
        scripts = carried.second_pass_runner(p.scripts, setting)
        return [cls.from_processing(p, index, job, host, scripts) for index in indices]

    @classmethod
    def from_processing(cls, p: Any, index: int, job: HiresJob, host: Host, scripts: Any) -> Generation:
        """Image `index` of a job: its prompt (LoRA tags and styles included), seed and settings,
        with the hires overrides of the job's parameters; `scripts` runs its extensions in the pass."""
        params = job.params
        refiner, switch_at = job.refiner or (None, None)
        return cls(
            prompt=params.second_pass_prompt(p.all_prompts[index]),
            negative_prompt=params.second_pass_negative_prompt(p.all_negative_prompts[index]),
            seed=params.second_pass_seed(p.all_seeds[index], index),
            subseed=p.all_subseeds[index],
            subseed_strength=p.subseed_strength,
            sampler_name=p.sampler_name,
            scheduler=getattr(p, "scheduler", None),
            cfg_scale=params.second_pass_cfg_scale(p.cfg_scale),
            distilled_cfg=params.second_pass_distilled_cfg(getattr(p, "distilled_cfg_scale", None)),
            steps=p.steps,
            override_settings={**_kept_settings(getattr(p, "override_settings", None) or {}, params, host),
                               **checkpoint_override(params)},
            outpath_samples=p.outpath_samples,
            scripts=scripts,
            script_args=list(p.script_args or []),
            refiner_checkpoint=refiner,
            refiner_switch_at=switch_at,
            is_api=bool(getattr(p, "is_api", False)),
            modules=params.modules,
        )

    @classmethod
    def from_image(cls, found: ImageGeneration, params: HiresParams, host: Host) -> Generation:
        """From what an existing image says of how it was made (any tool's record, or none), with the
        hires overrides of `params`; what neither gives comes from the WebUI's defaults, and every
        such choice, and where the prompt came from when not from the WebUI's own PNG text, is in
        the notes."""
        info, fields = found.info, found.info.fields
        notes = [Advice("image_info", "info", "image", f"From the image's {found.source or 'record'}: {note}.")
                 for note in found.notes if found.found]
        notes += _prompt_notes(found, params)
        decided: list[str] = []  # what the image did not say, as the WebUI's defaults gave it
        seed = info.seed
        if seed is None and params.seed < 0:
            seed = random.randrange(MAX_SEED + 1)
            decided.append(f"seed {seed}")
        if info.steps is None and not params.hires_steps:
            decided.append(f"{DEFAULT_STEPS} steps")
        samplers = compat.sampler_names()
        sampler = fields.get("Sampler")
        if sampler not in samplers and not params.sampler and samplers:
            unknown = f" (its {sampler} is not one of this WebUI's)" if sampler else ""
            decided.append(f"sampler {samplers[0]}{unknown}")
            sampler = samplers[0]
        scheduler = fields.get("Schedule type")
        if scheduler is not None and scheduler not in compat.scheduler_names():
            scheduler = None  # the WebUI's "Automatic" for the sampler
        if info.cfg_scale is None and not params.cfg_scale:
            decided.append(f"CFG scale {DEFAULT_CFG_SCALE:g}")
        # Forge writes a Flux dev's as "Distilled CFG Scale", Forge Neo a shift model's as "Shift"
        distilled = _number(fields, "Distilled CFG Scale", float, 0.0) or _number(fields, "Shift", float, 0.0) or None
        override_settings: dict[str, Any] = {}
        if "Model" in fields and not params.checkpoint:
            title = find_checkpoint(fields["Model"])
            if title is None:
                notes.append(Advice("image_checkpoint_missing", "warning", "checkpoint",
                                    f"The image's checkpoint {fields['Model']} is not here: the second pass ran "
                                    f"with the WebUI's, {webui_checkpoint()}."))
            else:
                override_settings["sd_model_checkpoint"] = title
        elif not params.checkpoint:
            decided.append(f"the loaded checkpoint {webui_checkpoint()}")
        if _number(fields, "Clip skip", int, 0):
            override_settings["CLIP_stop_at_last_layers"] = _number(fields, "Clip skip", int, 1)
        override_settings.update(checkpoint_override(params))
        if decided:
            notes.append(Advice("image_defaults", "info", "image", "The image did not say, so the second pass took "
                                f"the WebUI's: {', '.join(decided)}."))
        modules, module_notes = _image_modules_for(fields, params, host)
        notes += module_notes
        for note in notes:
            log.warning("hires upscale: %s", note.message)
        return cls(
            prompt=params.second_pass_prompt(info.prompt),
            negative_prompt=params.second_pass_negative_prompt(info.negative_prompt),
            seed=params.second_pass_seed(seed, 0),
            subseed=_number(fields, "Variation seed", int, -1),
            subseed_strength=_number(fields, "Variation seed strength", float, 0.0),
            sampler_name=sampler,
            scheduler=scheduler,
            cfg_scale=params.second_pass_cfg_scale(info.cfg_scale or DEFAULT_CFG_SCALE),
            distilled_cfg=params.second_pass_distilled_cfg(distilled),
            steps=info.steps or DEFAULT_STEPS,
            override_settings=override_settings,
            modules=modules,
            notes=tuple(notes),
        )


#: What a second pass of an image that does not say takes: the WebUI's own defaults (txt2img's CFG
#: scale, the API's steps).
DEFAULT_STEPS = 20
DEFAULT_CFG_SCALE = 7.0


def _prompt_notes(found: ImageGeneration, params: HiresParams) -> list[Advice]:
    """Where the second pass's prompt came from, where it was not the WebUI's own PNG text, and a
    pass without any prompt (with what to type)."""
    own = found.info.prompt
    if params.prompt and (own or "[prompt]" not in params.prompt):
        return []
    if own:
        if (found.tool, found.source) == ("A1111/Forge", "PNG text 'parameters'"):
            return []
        return [Advice("prompt_source", "info", "prompt",
                       f"The prompt came from {found.tool}'s record: {found.source}.")]
    return [Advice("no_prompt", "warning", "prompt",
                   "The second pass ran without a prompt: the image has none. Type one as the Hires prompt (the tab's "
                   "second pass overrides, or `prompt` in the API's params) to steer what the pass adds.")]


def _image_modules_for(fields: Mapping[str, str], params: HiresParams,
                       host: Host) -> tuple[tuple[str, ...], list[Advice]]:
    """The pass's VAE / text encoders: the parameters', else the image's own where this WebUI has them."""
    check_modules(params, host)
    if params.modules:
        return params.modules, []
    modules, missing = image_modules(fields, host)
    notes = []
    if host.modules_refused and modules:
        notes.append(Advice("image_modules_unsupported", "warning", "modules",
                            f"The image's VAE / text encoder {', '.join(modules)} was not used: "
                            f"{host.modules_refused}; the second pass ran with the WebUI's setting."))
        modules = ()
    if missing:
        notes.append(Advice("image_modules_missing", "warning", "modules",
                            f"The image's VAE / text encoder {', '.join(missing)} is not here: the second "
                            "pass ran with the WebUI's setting."))
    return modules, notes


def find_checkpoint(name: str) -> str | None:
    """The title of the checkpoint a name (an infotext's "Model", a title, a file name) means, if
    this WebUI has it."""
    from modules import sd_models

    info = sd_models.get_closet_checkpoint_match(name)
    return info.title if info is not None else None


def webui_checkpoint() -> str:
    """The file name of the checkpoint the WebUI runs with: its setting, or before anything has
    loaded (a first job right after start leaves the setting empty) the one it is about to load.
    The name, not the title: a title gains its hash only once the WebUI has computed it, and the
    same run must not read differently in the first job and the next."""
    from modules import sd_models

    title = getattr(shared.opts, "sd_model_checkpoint", None)
    info = sd_models.get_closet_checkpoint_match(title) if title else None
    if info is None:
        try:
            info = sd_models.select_checkpoint()
        except FileNotFoundError:  # A1111 with no checkpoint at all (Forge answers None)
            info = None
    return info.name if info is not None else (title or "(none)")


def checkpoint_titles() -> list[str]:
    from modules import sd_models

    return sorted(info.title for info in sd_models.checkpoints_list.values())


def checkpoint_override(params: HiresParams) -> dict[str, str]:
    """The WebUI setting that loads the hires checkpoint for the pass; none when it is the same."""
    if not params.checkpoint:
        return {}
    title = find_checkpoint(params.checkpoint)
    if title is None:
        raise ParamsError([FieldError("checkpoint", params.checkpoint,
                                      "empty (the same as the first pass) or one of the WebUI's checkpoints: "
                                      + ", ".join(checkpoint_titles()))])
    return {"sd_model_checkpoint": title}


def loaded_model() -> Any:
    """The loaded model, or None: unlike `shared.sd_model`, asking never loads a checkpoint."""
    from modules import sd_models

    return getattr(getattr(sd_models, "model_data", None), "sd_model", None)


def loaded_checkpoint() -> Any:
    """The checkpoint (its info) the WebUI has loaded now."""
    return getattr(shared.sd_model, "sd_checkpoint_info", None)


@contextmanager
def first_pass_checkpoint_kept(host: Host) -> Iterator[None]:
    """Whatever the passes inside load (a hires checkpoint, a refiner, an image's own), the
    checkpoint loaded before is loaded again afterwards, also after an error or an interrupt."""
    before = loaded_checkpoint()
    try:
        yield
    finally:
        host.load_checkpoint_back(before)


def image_modules(fields: Mapping[str, str], host: Host) -> tuple[tuple[str, ...], list[str]]:
    """The VAE / text-encoder files an image's PNG info names (`host.image_module_names`), as this WebUI's
    file names, and the names it does not have. An image that names none gives none: the pass keeps the
    WebUI's setting."""
    known = host.module_files()
    by_stem = {os.path.splitext(name)[0]: name for name in known}
    found: list[str] = []
    missing: list[str] = []
    for name in host.image_module_names(fields):
        match = name if name in known else by_stem.get(name) or by_stem.get(os.path.splitext(name)[0])
        if match is None:
            missing.append(name)
        else:
            found.append(match)
    return tuple(dict.fromkeys(found)), missing


def check_modules(params: HiresParams, host: Host) -> None:
    """Refuse VAE / text-encoder files this WebUI does not have, or more than it takes."""
    if not params.modules:
        return
    if host.modules_refused:
        raise ParamsError([FieldError("modules", list(params.modules), f"[] here: {host.modules_refused}")])
    if params.modules == (BUILT_IN_MODULES,):
        return
    known = sorted(host.module_files())
    unknown = [name for name in params.modules if name not in known]
    several = host.max_modules > 1
    if unknown or len(params.modules) > host.max_modules:
        what = "file names" if several else "one file name (this WebUI takes a single VAE)"
        raise ParamsError([FieldError("modules", list(params.modules),
                                      f"[] (the same as the first pass), [{BUILT_IN_MODULES!r}] or {what} from "
                                      f"the WebUI's {'VAE and text_encoder folders' if several else 'VAE folder'}: "
                                      + (", ".join(known) or "(there are none)"))])


def _kept_settings(settings: dict[str, Any], params: HiresParams, host: Host) -> dict[str, Any]:
    """The first pass's setting overrides for the second pass, less its VAE / text encoders where
    the pass has its own (`host.second_pass_modules` sets those; an override would win)."""
    if not params.modules:
        return dict(settings)
    return {key: value for key, value in settings.items() if key != host.module_setting}


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
    (`first_pass_checkpoint_kept`), so a run of images loads it once, not once per image. `outer`
    is the job whose images these are, if any: the nested pass leaves it as it was.
    """

    def __init__(self, generations: list[Generation], session: Session, outer: Any = None) -> None:
        self.generations = generations
        self.session = session
        self.outer = outer
        #: infotext fields of what the last pass ran with that the plan cannot know (None: drop the plan's)
        self.pass_fields: dict[str, str | None] = {}

    @property
    def model_family(self) -> str:
        return self.session.host.model_family(shared.sd_model)

    @property
    def background(self) -> str:
        """What the pipeline flattens transparency onto before img2img: the WebUI's own setting."""
        color = str(getattr(shared.opts, "img2img_background_color", "#ffffff") or "#ffffff")
        try:
            ImageColor.getrgb(color)
        except ValueError:  # a hand-edited config must not break the run
            return "#ffffff"
        return color

    def second_pass(
        self, images: list[Image.Image], plan: Plan, *, progress: Callable[[int, int], None],
        should_stop: Callable[[], bool], notify: Callable[[Advice], None] = lambda advice: None,
    ) -> list[Image.Image]:
        """Every image through the tiling policy's ladder: together where they fit, one at a time,
        tiled, as it says, moving on after running out of memory."""
        if should_stop():
            raise Interrupted("stopped before the second pass")
        if len(images) != len(self.generations):
            raise ValueError(f"{len(images)} images for {len(self.generations)} generations")
        for note in dict.fromkeys(note for generation in self.generations for note in generation.notes):
            notify(note)
        tiling, host = self.session.tiling, self.session.host
        ladder = tiling.ladder(plan.params.tiled, plan.target, len(images), _memory(),
                               cannot_tile=host.cannot_tile(shared.sd_model))
        if host.one_image_per_pass(shared.sd_model):
            ladder = replace(ladder, attempts=tuple(a for a in ladder.attempts if not a.together))

        def run(indices: Sequence[int], attempt: Attempt) -> list[Image.Image]:
            return self._img2img([images[i] for i in indices], [self.generations[i] for i in indices], plan,
                                 tiled=attempt.tiled, notify=notify)

        def reached(attempt: Attempt) -> None:
            log.warning("hires upscale: %s", attempt.after_failure)
            notify(Advice(attempt.code, "warning", attempt.field, attempt.after_failure))

        done = tiling.climb(ladder, len(images), run, reached)
        progress(1, 1)
        return done

    def _img2img(self, images: list[Image.Image], generations: list[Generation], plan: Plan, *, tiled: bool,
                 notify: Callable[[Advice], None]) -> list[Image.Image]:
        """One img2img job over `images`; `OutOfMemory` when the host runs out of memory."""
        img2img = _new_img2img(images, generations, plan)
        width, height = plan.target
        progress.add_job()
        progress.report(f"Hires upscale: {plan.pass_label}second pass, {img2img.steps} steps at {width}x{height}"
                        + (f", {len(images)} images" if len(images) > 1 else "") + (", tiled" if tiled else ""))
        host = self.session.host
        with ExitStack() as installed:
            tiling = TileSettings.for_tile_size(plan.params.tile_size, plan.family.tile) if tiled else None
            latent = _latent_interpolation(plan.params.upscaler) if plan.upscaler_kind == "latent" else None
            _prepare_init(img2img, installed, host, tiling, notify, latent=latent)
            installed.enter_context(host.second_pass_modules(generations[0].modules))
            installed.enter_context(_outer_job_kept(self.outer, list(img2img.override_settings), host))
            try:
                processed = processing.process_images(img2img)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                from modules import devices

                devices.torch_gc()  # before anything else runs, tiled or not
                raise OutOfMemory("second pass", (width, height), "") from error
            finally:
                img2img.close()
        self._record_guidance(img2img, plan, notify)
        return _images_of(processed, len(images), notify)

    def _record_guidance(self, img2img: Any, plan: Plan, notify: Callable[[Advice], None]) -> None:
        """The distilled CFG (or shift) the pass ran with, for the infotext, where its model reads one;
        an override it ignored is said, and not written."""
        key = plan.params.infotext_key("distilled_cfg")
        if self.session.host.guidance_kind(getattr(img2img, "sd_model", None) or shared.sd_model) is not None:
            self.pass_fields[key] = f"{img2img.distilled_cfg_scale:g}"
            return
        said = key in self.pass_fields  # once per run, not once per pass
        self.pass_fields[key] = None
        if plan.params.distilled_cfg and not said:
            notify(Advice("distilled_cfg_unused", "info", "distilled_cfg",
                          f"Hires distilled CFG {plan.params.distilled_cfg:g} was not used: the second pass's model "
                          "reads no distilled CFG or shift (Flux dev does on Forge; Lumina 2, Z-Image and Wan on "
                          "Forge Neo)."))


def _new_img2img(images: list[Image.Image], generations: list[Generation], plan: Plan) -> Any:
    """The nested img2img of `images`: each image's own prompt, seed and settings, the plan's size,
    denoise and steps, exactly those steps, and this extension kept out of it."""
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
        # Forge's field (A1111 has none: dropped there); None keeps the host's default
        **({} if first.distilled_cfg is None else {"distilled_cfg_scale": first.distilled_cfg}),
        steps=plan.steps or first.steps,
        width=width,
        height=height,
        init_images=images,
        # 3 = the WebUI's "Just resize (latent upscale)": the image is encoded at its own size and
        # the latent resized (here with the latent mode's own interpolation: `_prepare_init`).
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
    mark_inner(img2img)
    img2img.scripts = first.scripts if first.scripts is not None else carried.empty_runner()
    img2img.script_args = first.script_args
    return img2img


def _images_of(processed: Any, count: int, notify: Callable[[Advice], None]) -> list[Image.Image]:
    """The pass's images out of the host's result, or why there are none to keep."""
    if progress.should_stop():
        # A sampler stopped mid-way leaves half-denoised images: keep the upscaled ones instead.
        raise Interrupted("stopped during the second pass")
    refiner = (getattr(processed, "extra_generation_params", None) or {}).get("Refiner")
    if refiner:
        setting = getattr(shared.opts, "hires_fix_refiner_pass", None)
        notify(Advice("refiner", "info", "second pass", f"The second pass switched to the refiner {refiner} "
                      f"(\"Hires fix: which pass to enable refiner for\" is {setting})."))
    if len(processed.images) < count:
        raise SecondPassFailed(f"the WebUI's img2img returned {len(processed.images)} of {count} images "
                               "(an extension running in the pass may have stopped it; see the console)")
    # extensions may append their own pictures (ControlNet's detected maps) after ours
    return processed.images[:count]


def _memory() -> MemoryFacts:
    """Free device memory (None on the CPU or MPS: no reliable number) and the VAE's bytes per value."""
    import torch
    from modules import devices

    device = getattr(devices, "device", None)
    free: int | None = None
    if getattr(device, "type", None) == "cuda" and torch.cuda.is_available():
        available, _total = torch.cuda.mem_get_info(device)
        # memory torch holds but does not use is free to us as well
        free = int(available + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    dtype = torch.empty((), dtype=getattr(devices, "dtype_vae", torch.float32)).element_size()
    return MemoryFacts(free, dtype)


def _one_or_each(values: list[Any], *, distinct: bool = False) -> Any:
    """A single value where the WebUI's own arithmetic gives every image the same (prompts) or the
    same progression, else the list: extensions read `p.prompt` and `p.seed` as scalars."""
    if len(values) == 1:
        return values[0]
    if not distinct and all(v == values[0] for v in values):
        return values[0]
    return list(values)


def _latent_interpolation(name: str) -> tuple[str, bool]:
    """torch's interpolation mode and antialias flag of a WebUI latent mode, as its built-in Hires fix
    resizes latents ("Latent (nearest-exact)" -> ("nearest-exact", False))."""
    mode = (getattr(shared, "latent_upscale_modes", {}) or {}).get(name) or {}
    return str(mode.get("mode", "bilinear")), bool(mode.get("antialias", False))


def _prepare_init(img2img: Any, installed: ExitStack, host: Host, tiling: TileSettings | None,
                  notify: Callable[[Advice], None], *, latent: tuple[str, bool] | None) -> None:
    """Replace img2img's `init`, which runs once any checkpoint override has loaded the pass's model:
    there the tiled pass is installed (until `installed` closes), and for a latent mode the latent is
    resized with the mode's own interpolation, as the built-in Hires fix does (img2img's "latent
    upscale" resize is bilinear whatever the mode): init then runs at the images' own size, so its
    own resize is the identity."""
    init = img2img.init

    def init_prepared(*args: Any, **kwargs: Any) -> Any:
        if tiling is not None:
            _install_tiling(img2img, installed, host, tiling, notify)
        if latent is None:
            outcome = init(*args, **kwargs)
            host.after_encode(img2img)
            return outcome
        width, height = img2img.width, img2img.height
        source = img2img.init_images[0]
        img2img.width, img2img.height = source.width, source.height
        try:
            outcome = init(*args, **kwargs)
        finally:
            img2img.width, img2img.height = width, height
        host.after_encode(img2img)
        _resize_latents(img2img, (width, height), latent)
        return outcome

    img2img.init = init_prepared


def _resize_latents(img2img: Any, size: tuple[int, int], interpolation: tuple[str, bool]) -> None:
    import torch

    width, height = size
    mode, antialias = interpolation

    def resized(latent: Any) -> Any:
        return torch.nn.functional.interpolate(latent, size=(height // 8, width // 8), mode=mode, antialias=antialias)

    img2img.init_latent = resized(img2img.init_latent)
    conditioning = getattr(img2img, "image_conditioning", None)
    if conditioning is not None and conditioning.dim() == 4 and conditioning.shape[-1] > 1:
        # an inpainting model's conditioning is spatial: it follows the latent
        img2img.image_conditioning = resized(conditioning)


def _install_tiling(img2img: Any, installed: ExitStack, host: Host, settings: TileSettings,
                    notify: Callable[[Advice], None]) -> None:
    """The host's tiled pass for the model img2img runs on, or the reason it runs untiled, said once."""
    reason = host.cannot_tile(getattr(img2img, "sd_model", None) or shared.sd_model)
    if reason is not None:
        notify(Advice("tiling_unavailable", "warning", "tiled", f"The second pass ran untiled: {reason}."))
        return

    def fallback(reason: str) -> None:  # heard once per pass
        log.warning("hires upscale: a UNet call ran full frame: %s", reason)
        notify(Advice("unet_full_frame", "warning", "tiled",
                      f"The second pass's UNet ran untiled (the VAE stayed tiled): {reason}."))

    installed.enter_context(host.tiled_pass(img2img, settings, fallback, notify))


@contextmanager
def _outer_job_kept(outer: Any, settings: list[str], host: Host) -> Iterator[None]:
    """A nested `process_images` leaves the outer job as it was: the WebUI's own restore after
    one misses what is put back here.
    - params.txt: the nested job writes its own parameters over the user's generation.
    - Settings the nested job overrides that the user never saved are not in `opts.data`, so the
      WebUI's restore skips them and they stay set for the rest of the session.
    - What the host itself leaves changed (`host.after_nested_job`: A1111's token merging).
    """
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
        if outer is not None:
            host.after_nested_job(outer)
