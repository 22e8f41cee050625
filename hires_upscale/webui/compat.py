"""The plain version differences between A1111 v1.6 and v1.10 (which Forge and reForge share), in
one place. What differs between the WebUIs themselves (A1111, Forge, reForge) is `hosts`."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from modules import processing, scripts, shared

#: v1.8+ runs postprocess_image_after_composite on the composited (inpaint) image.
HAS_AFTER_COMPOSITE: bool = hasattr(scripts.Script, "postprocess_image_after_composite")


def image_index(p: Any) -> int | None:
    """Index of the image being post-processed within the whole job (all batches); None where the
    WebUI does not say (very old versions: the caller counts)."""
    batch_index = getattr(p, "batch_index", None)
    return None if batch_index is None else p.iteration * p.batch_size + batch_index


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


def image_from_gallery(item: Any) -> Any:
    """A gallery entry as the page sent it (Gradio 3: a file dict; Gradio 4: an (image, caption) pair)
    as a PIL image, through the WebUI's own reader (`infotext_utils` from v1.8, before it
    `generation_parameters_copypaste`), which also refuses files outside Gradio's temporary folder."""
    try:
        from modules import infotext_utils as reader
    except ImportError:
        from modules import generation_parameters_copypaste as reader
    return reader.image_from_url_text(item)
