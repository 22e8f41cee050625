"""The use cases the script, the tab and the API share.

- `prepare` / `postprocess_batch` / `postprocess` / `finish`: the hires upscale of images the
  WebUI just made, as one `HiresJob` per job.
- `upscale_existing` / `upscale_files`: images that already exist, their prompt and seed read from
  their PNG info.

`session` is the WebUI session's host and tiling policy (`backend.Session`), made by the script
file at start and passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from modules import shared
from PIL import Image

from ..batch import Done, ExistingOutput, Skipped, run_files
from ..errors import FieldError, HiresUpscaleError, ParamsError
from ..folders import Job, image_files, plan_jobs
from ..images import notices, output_suffix, record_of
from ..infotext import with_fields
from ..metadata import read_generation
from ..params import SCRIPT_FIELDS, HiresParams
from ..pipeline import COLOR_FIX, SHARPEN, UPSCALE, NamedResult, Pipeline, Result
from ..plan import PASS_BEGINS, REACHED_FROM_KEY, REACHED_TO_KEY, make_plan, pass_label
from . import compat, outputs, progress
from .backend import (
    Generation,
    Session,
    WebUIBackend,
    check_modules,
    checkpoint_override,
    first_pass_checkpoint_kept,
    loaded_checkpoint,
    loaded_model,
)
from .hosts import Host
from .job import Failure, HiresJob, Outcome, attach, is_inner, job_of
from .upscalers import check_upscaler, default_upscaler, engine_settings, upscaler_for

log = logging.getLogger("hires_upscale")

#: Dropdown label for "use the first pass's sampler/scheduler" (the parameter value is "").
SAME = "Same as first pass"
#: The dropdowns that offer SAME for the empty value.
SAME_WHEN_EMPTY = ("sampler", "scheduler", "checkpoint")
#: Infotext key that tells why an image was not upscaled (not a parameter: paste ignores it).
ERROR_KEY = "Hires upscale error"
#: Infotext key for what the run did on its own, e.g. ran tiled after running out of memory.
NOTES_KEY = "Hires upscale notes"
#: Infotext key for where an interrupt stopped our stages.
INTERRUPTED_KEY = "Hires upscale interrupted"
#: Infotext key for the plan's advice (latent mode below 0.5, more than 2x...): the same for every image.
ADVICE_KEY = "Hires upscale advice"


def params_from_args(args: Sequence[Any]) -> HiresParams:
    """Validated parameters from the script's arguments (UI or `alwayson_scripts`).

    Either positional, in `SCRIPT_FIELDS` order, or one object of named parameters (any subset;
    the rest take the API's defaults, so an object means "on" unless it says `enabled: false`).
    The WebUI pads a short `args` with the UI's defaults, which an object makes meaningless.
    """
    if args and isinstance(args[0], Mapping):
        values = {"enabled": True, "upscaler": default_upscaler(), **args[0]}
    else:
        named = [i for i, value in enumerate(args) if isinstance(value, Mapping)]
        if named:
            raise ParamsError([FieldError("args", f"an object at position {named[0]}",
                                          "either one object of named parameters as the only item, or a "
                                          f"positional list in this order: {', '.join(SCRIPT_FIELDS)}")])
        values = dict(zip(SCRIPT_FIELDS, args, strict=False))
    for name in SAME_WHEN_EMPTY:
        if values.get(name) in (SAME, None):
            values[name] = ""
    return HiresParams.from_mapping(values)


class _StageProgress:
    """Names the stage in the WebUI's progress text, with the pass of a progressive run ("pass 2/2:
    upscaling 3/9 tiles"); the upscale stage is one job of the bar. The second pass names itself."""

    def __init__(self) -> None:
        self.which = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == PASS_BEGINS:
            self.which = pass_label(done, total)
        elif stage == UPSCALE:
            progress.report(f"Hires upscale: {self.which}upscaling {done}/{total} tile{'s' if total > 1 else ''}",
                            done, total)
            if done == total:
                progress.next_job()
        elif stage == COLOR_FIX:
            progress.report(f"Hires upscale: {self.which}color fix")
        elif stage == SHARPEN:
            progress.report("Hires upscale: sharpening")


# -- images the WebUI just made -------------------------------------------------

def prepare(p: Any, args: Sequence[Any], session: Session) -> None:
    """Validate the arguments and plan the upscale once per job (`HiresJob`), and write our fields
    into the infotext.

    Bad arguments (e.g. from the API) or an impossible plan (a target above the limit) are reported
    in the console and the result's info text; the generation itself goes on without the upscale.
    The plan's advice (a latent mode below denoise 0.5, more than 2x in one pass...) is shown under
    the result and written into the infotext, once per job; the same plan then runs.
    """
    attach(p, None)
    if is_inner(p):
        return
    try:
        params = params_from_args(args)
        if not params.enabled:
            return
        check_upscaler(params.upscaler)
        checkpoint_override(params)  # a hires checkpoint or VAE this WebUI lacks is refused before any work
        check_modules(params, session.host)
        # every image of the job has the job's size; the family is the first pass's checkpoint's
        plan = make_plan((p.width, p.height), params, session.host.model_family(shared.sd_model),
                         first_pass_steps=p.steps)
    except HiresUpscaleError as error:
        message = f"Hires upscale is off for this job: {error}"
        log.error(message)
        _comment(p, message)
        p.extra_generation_params[ERROR_KEY] = message  # API callers see the info, not the page's comments
        return
    attach(p, HiresJob(params, plan, loaded_checkpoint(), _second_pass_refiner(p)))
    p.extra_generation_params.update(params.infotext_fields())  # the sizes reached come with each result
    messages = [advice.message for advice in plan.advice]
    if not plan.family.known:  # the core cannot name what it does not know: the host can
        messages.append(f"The loaded model is the WebUI's {session.host.engine_name(shared.sd_model)}.")
        log.warning("hires upscale: %s", " ".join(messages[-2:]))
    for message in messages:
        _comment(p, f"Hires upscale: {message}")
    if messages:
        p.extra_generation_params[ADVICE_KEY] = " ".join(messages)


def _second_pass_refiner(p: Any) -> tuple[str, float] | None:
    """The built-in Hires fix runs the refiner where "Hires fix: which pass to enable refiner for" says
    (default: the second pass only); so do we. The WebUI has resolved it for the first pass already,
    which for "second pass" is taken off it here."""
    refiner_pass = getattr(shared.opts, "hires_fix_refiner_pass", "second pass")
    if getattr(p, "refiner_checkpoint_info", None) is None or refiner_pass == "first pass":
        return None
    if refiner_pass == "second pass":
        p.refiner_checkpoint_info = None
    return p.refiner_checkpoint, p.refiner_switch_at


def postprocess_batch(p: Any, images: list[Any], session: Session) -> None:
    """The hires upscale of one batch of the job, all its images through one second pass.

    `images` are the batch's decoded images (the WebUI's tensors); each is replaced by its
    result, so what the WebUI does next (face restoration, other extensions, saving) works on
    the upscaled picture, as after the built-in Hires fix. Inpainting is left to `postprocess`,
    which runs after the WebUI has composited each image.
    """
    job = job_of(p)
    if job is None or _composites_per_image(p) or not images:
        return
    first = p.iteration * p.batch_size
    indices = list(range(first, first + len(images)))
    pictures = [_tensor_to_image(image) for image in images]
    with first_pass_checkpoint_kept(session.host):  # what runs next in this batch needs the first pass's model
        outcomes = _run(p, pictures, indices, job, session)
    for position, (index, outcome) in enumerate(zip(indices, outcomes, strict=True)):
        job.outcomes[index] = outcome
        if isinstance(outcome, Result):
            images[position] = _image_to_tensor(outcome.image)


def _run(p: Any, images: list[Image.Image], indices: list[int], job: HiresJob, session: Session) -> list[Outcome]:
    """Images of the job (at `indices`) through the job's plan; each a `Result`, or all the same
    `Failure` (the first pass's images are then kept, and the reason goes into their infotext)."""
    try:
        backend = WebUIBackend(Generation.of_images(p, indices, job, session.host), session, p)
        pipeline = Pipeline(upscaler_for(job.params), backend)
        if getattr(shared.opts, "hires_upscale_save_first_pass", False):
            for image, index in zip(images, indices, strict=True):
                outputs.save_first_pass(p, image, index)
        plan = job.plan
        if images[0].size != plan.source:  # not the job's size (an extension resized it): planned for its own
            plan = pipeline.plan(images[0], job.params, first_pass_steps=p.steps)
        _count_upscale_jobs(plan.stages, len(images))
        return list(pipeline.run_batch(images, plan, progress=_StageProgress(), should_stop=progress.should_stop))
    except Exception as error:
        # A bug of ours, or of the host inside our pass, must not cost the user the first pass's
        # images nor hide why they stayed small: the console gets the traceback, the images the reason.
        ours = isinstance(error, HiresUpscaleError)
        which = f"image {indices[0] + 1}" if len(indices) == 1 else f"images {indices[0] + 1}-{indices[-1] + 1}"
        message = f"Hires upscale failed for {which}: {error if ours else f'{type(error).__name__}: {error}'}"
        (log.error if ours else log.exception)(message)
        _comment(p, message)
        return [Failure(message)] * len(images)
    finally:
        progress.report(None)


def _count_upscale_jobs(stages: tuple[str, ...], images: int) -> None:
    """The progress bar's jobs for the upscale stages, one per image and pass; the second pass adds its own."""
    for _ in range(stages.count(UPSCALE) * images):
        progress.add_job()


def postprocess(p: Any, image: Image.Image, session: Session) -> Image.Image:
    """One image of the job after the WebUI composited it: upscaled here unless its batch was
    (`postprocess_batch`); either way its infotext is made to tell what happened to it."""
    job = job_of(p)
    if job is None:
        return image
    index = compat.image_index(p)
    if index is None:
        index = job.next_index()
    outcome = job.outcomes.pop(index, None)
    if outcome is None:
        [outcome] = _run(p, [image], [index], job, session)
    if isinstance(outcome, Result):
        image = outcome.image
    _write_infotext(p, index, outcome)
    return image


def finish(p: Any, session: Session) -> None:
    """At the end of the job: the first pass's checkpoint is loaded again, after the per-image passes
    of inpainting, which leave a hires checkpoint loaded so that it loads once, not once per image."""
    job = job_of(p)
    if job is not None:
        session.host.load_checkpoint_back(job.checkpoint)


def _write_infotext(p: Any, index: int, outcome: Outcome) -> None:
    """The infotext of this image is written right after our hook: make it tell this image's story."""
    extra = p.extra_generation_params
    for key in (ERROR_KEY, NOTES_KEY, INTERRUPTED_KEY):
        extra.pop(key, None)
    if isinstance(outcome, Failure):
        extra[ERROR_KEY] = outcome.message  # this image's infotext says why it is small, and no size it did not reach
        for key in (REACHED_FROM_KEY, REACHED_TO_KEY):
            extra.pop(key, None)
        return
    extra.update(result_fields(outcome))
    for key, value in outcome.pass_fields.items():  # the plan wrote it; the pass did not use it
        if value is None:
            extra.pop(key, None)
    for notice in outcome.notices:  # e.g. ran tiled after running out of memory: shown under the result too
        _comment(p, f"Hires upscale, image {index + 1}: {notice.message}")


def result_fields(done: Result) -> dict[str, str]:
    """An image's infotext fields: the plan's and the size reached, what the run did on its own (ran
    tiled after running out of memory, an image's VAE that is not here), where an interrupt stopped it."""
    fields = dict(done.infotext_fields)
    if done.notices:
        fields[NOTES_KEY] = " ".join(notice.message for notice in done.notices)
    if done.interrupted:
        fields[INTERRUPTED_KEY] = "after " + done.reached
    return fields


def _comment(p: Any, text: str) -> None:
    """A note shown under the result in the UI (and in the API's info)."""
    if hasattr(p, "comment"):
        p.comment(text)


def _composites_per_image(p: Any) -> bool:
    """Whether the WebUI pastes each result into an original (inpainting): then the upscale waits for
    the composited image (v1.8+), and each image has its own pass."""
    return getattr(p, "image_mask", None) is not None or bool(getattr(p, "overlay_images", None))


def _tensor_to_image(tensor: Any) -> Image.Image:
    """A decoded image of a batch (C, H, W floats in 0..1, as the WebUI hands them to scripts) as RGB."""
    import numpy as np

    pixels = (255.0 * np.moveaxis(tensor.detach().float().cpu().numpy(), 0, 2)).astype(np.uint8)
    return Image.fromarray(pixels)


def _image_to_tensor(image: Image.Image) -> Any:
    """The inverse of `_tensor_to_image`, exact: the WebUI's own conversion gives back the same bytes."""
    import numpy as np
    import torch

    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(pixels, 2, 0)))


# -- images that already exist ---------------------------------------------------

def base_params(overrides: dict[str, Any]) -> HiresParams:
    """Parameters of the tab and the API: enabled, the default upscaler, then the overrides."""
    return HiresParams.from_mapping({"enabled": True, "upscaler": default_upscaler(), **overrides})


def generation_of(image: Image.Image, params: HiresParams, host: Host) -> Generation:
    """What the second pass of an existing image repeats: any tool's record it carries, or none (a
    photo), with the WebUI's defaults for the rest. A record that is there but cannot be read is
    refused for a second pass without a typed prompt: running without it would be a silent guess."""
    found = read_generation(record_of(image))
    if not found.found and params.denoise > 0 and not params.prompt:
        dropped = [n.message for n in notices(image) if n.code == "text_dropped"]
        if dropped or found.notes:
            raise ParamsError([FieldError("image", "PNG text over Pillow's limits" if dropped else
                                          "unreadable generation info",
                                          "an image whose generation info can be read, a typed prompt (prompt), "
                                          "or denoise 0 (upscale only): " + " ".join(dropped or found.notes))])
    return Generation.from_image(found, params, host)


def upscale_existing(image: Image.Image, params: HiresParams, session: Session, name: str = "image",
                     generation: Generation | None = None) -> NamedResult:
    """The hires upscale of an existing image (made by the WebUI, another tool, or a camera): its
    prompt, seed, sampler, steps, CFG and checkpoint from its own record where it has one, overrides
    from `params`, the WebUI's defaults for the rest (see `generation_of`)."""
    check_upscaler(params.upscaler)
    found = read_generation(record_of(image))
    generation = generation or generation_of(image, params, session.host)
    pipeline = Pipeline(upscaler_for(params), WebUIBackend([generation], session))
    try:
        plan = pipeline.plan(image, params, first_pass_steps=found.info.steps)
        _count_upscale_jobs(plan.stages, 1)
        result = pipeline.run_batch([image], plan, progress=_StageProgress(), should_stop=progress.should_stop)[0]
    finally:
        progress.report(None)
    infotext = with_fields(found.text, result_fields(result))
    result.image.info["parameters"] = infotext
    return NamedResult(name, result, infotext)


def upscale_files(sources: list[Path], output_folder: Path, params: HiresParams, session: Session, *,
                  existing: ExistingOutput, same_format: bool = False) -> Iterator[Done | Skipped]:
    """Existing images into `output_folder` through the one batch loop (`batch.run_files`): each
    output keeps its input's generation info, with our fields added to its parameters; PNG, or with
    `same_format` a JPEG or WebP input's own format."""
    output_folder.mkdir(parents=True, exist_ok=True)
    if existing == "new name":  # dropped files: names may repeat, each gets a free one
        jobs = [Job(source, output_folder / f"{source.stem}{output_suffix(source, same_format)}") for source in sources]
    else:
        jobs = plan_jobs(sources, output_folder, same_format=same_format)

    def upscale(image: Image.Image, source: Path) -> tuple[Result, dict[str, str]]:
        done = upscale_existing(image, params, session, source.name)
        return done.result, {"parameters": done.infotext}

    yield from run_files(jobs, upscale, existing=existing, should_stop=progress.should_stop)


def upscale_folder(input_folder: str, output_folder: str, params: HiresParams, session: Session, *,
                   same_format: bool = False) -> Iterator[Done | Skipped]:
    """Every image of a folder into another, skipping outputs already written (a rerun resumes)."""
    source = outputs.resolve_allowed(input_folder)
    default = outputs.default_output_folder()
    target = outputs.resolve_allowed(output_folder or str(default), also=[default])
    yield from upscale_files(image_files(source), target, params, session, existing="skip", same_format=same_format)


def page_options(session: Session) -> dict[str, Any]:
    """What the page's live hints need (javascript/hires_upscale.js): sent with the page itself
    (`ui.page_options_box`), so they need neither the API nor its credentials. Also in GET options."""
    from ..advice import MAX_STEPS_RATIO, rules_as_data
    from ..params import hover_hints, upscaler_kind
    from ..resolution import FAMILIES, PRESETS, UNKNOWN, family
    from ..upscaler import activation_bytes_per_pixel
    from .upscalers import upscaler_choices

    return {
        "upscaler_kinds": {name: upscaler_kind(name) for name in upscaler_choices()},
        # the loaded checkpoint's family; asking must not load one
        "model_family": session.host.model_family(loaded_model()),
        "families": {name: {**f.as_dict(), "max_steps_ratio": MAX_STEPS_RATIO}
                     for name, f in {**FAMILIES, UNKNOWN: family(UNKNOWN)}.items()},
        "presets": {family: [p.as_dict() for p in presets] for family, presets in PRESETS.items()},
        "advice_rules": rules_as_data(),
        "hints": hover_hints(),
        # for the page's memory estimate of a tile of a 4x model, in this WebUI's precision
        "tile_bytes_per_pixel": activation_bytes_per_pixel(
            4, 4 if engine_settings(HiresParams())["precision"] == "fp32" else 2),
    }


class WebUIApiHost:
    """What the HTTP routes need from the WebUI (see `api.ApiHost`)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def options(self) -> dict[str, Any]:
        from .. import __version__
        from ..images import MAX_INPUT_PIXELS
        from ..params import json_schema
        from ..resolution import DEFAULT_MAX_PIXELS
        from .api import MAX_IMAGES
        from .upscalers import engine_upscalers, upscaler_choices

        host = self.session.host
        return {
            "version": __version__,
            # which WebUI this is ("a1111", "forge", "forge-neo", "reforge")
            "host": host.kind,
            "upscalers": upscaler_choices(),
            # the model upscalers whose local file our engine runs; other model upscalers run the
            # WebUI's own code (LDSR, ScuNET, a model it still has to download)
            "engine_upscalers": engine_upscalers(),
            "latent_modes": list(getattr(shared, "latent_upscale_modes", {}) or {}),
            # what `modules` may name: the WebUI's VAE files (Forge: also its text encoders), and how many
            "modules": sorted(host.module_files()),
            "max_modules": host.max_modules,
            **page_options(self.session),
            "defaults": base_params({}).as_dict(),
            "script_args": list(SCRIPT_FIELDS),
            "limits": {"max_output_pixels": DEFAULT_MAX_PIXELS, "max_input_pixels": MAX_INPUT_PIXELS,
                       "max_images_per_request": MAX_IMAGES},
            "schema": json_schema(),
        }

    def base_params(self, overrides: dict[str, Any]) -> HiresParams:
        return base_params(overrides)  # the module function of the same name

    def open_path(self, path: str) -> tuple[str, Image.Image]:
        real, image = outputs.open_allowed(path)
        return real.name, image

    def run(self, items: list[tuple[str, Image.Image]], params: HiresParams, *,
            client_gone: Callable[[], bool]) -> list[NamedResult]:
        """Every item in turn under the WebUI's queue lock; a client that went away stops the run
        between images, so the lock is not held for nobody."""
        from modules.call_queue import queue_lock

        from .api import ItemError

        host = self.session.host
        check_upscaler(params.upscaler)
        checkpoint_override(params)  # the run's own choices are refused at their field, before any image
        check_modules(params, host)
        generations = []
        for index, (_name, image) in enumerate(items):
            try:
                generations.append(generation_of(image, params, host))
            except HiresUpscaleError as error:
                raise ItemError(index, error) from None
        results: list[NamedResult] = []
        with queue_lock:
            shared.state.begin(job="hires_upscale_api")
            try:
                with first_pass_checkpoint_kept(host):  # the images' own checkpoints load once each
                    for (name, image), generation in zip(items, generations, strict=True):
                        if client_gone():
                            log.warning("hires upscale: the API client went away; stopped after %d of %d images",
                                        len(results), len(items))
                            break
                        results.append(upscale_existing(image, params, self.session, name, generation))
            finally:
                shared.state.end()
        return results
