"""The orchestrator: plan -> upscale -> second pass -> color fix -> sharpen.

The second pass needs a diffusion model, so it is behind the small `Backend`
protocol: the WebUI adapter implements it with the host's img2img processing.
Without a backend (the command line) the run is upscale and sharpen only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image

from .advice import Advice
from .colorfix import color_fix
from .errors import Interrupted
from .images import notices
from .params import HiresParams
from .plan import (
    COLOR_FIX,
    PASS_BEGINS,
    REACHED_FROM_KEY,
    REACHED_TO_KEY,
    SECOND_PASS,
    SHARPEN,
    UPSCALE,
    Plan,
    make_plan,
)
from .resolution import SNAP_MULTIPLE, apply_fit
from .sharpen import sharpen
from .upscaler import ImageUpscaler, LanczosUpscaler

#: progress(stage, done, total), stage one of STAGES; (PASS_BEGINS, n, count) before pass n of a
#: progressive run
Progress = Callable[[str, int, int], None]
ShouldStop = Callable[[], bool]

STAGES = (UPSCALE, SECOND_PASS, COLOR_FIX, SHARPEN)
#: What transparent pixels become before a second pass, unless the backend names its own
#: `background` (the WebUI's img2img flattens onto its "img2img_background_color", white by default).
DEFAULT_BACKGROUND = "#ffffff"


class Backend(Protocol):
    """What the pipeline needs from a host that can run img2img. It may also have `background` (what
    transparency is flattened onto) and `pass_fields` (infotext fields of what its last pass ran with)."""

    #: a name of `resolution.FAMILIES`, or `resolution.UNKNOWN`: the checkpoint the second pass will use
    model_family: str

    def second_pass(
        self, images: list[Image.Image], plan: Plan, *, progress: Callable[[int, int], None],
        should_stop: ShouldStop, notify: Callable[[Advice], None],
    ) -> list[Image.Image]:
        """img2img of `images` (image n is image n of the backend's job) at `plan.target` with
        `plan.params.denoise` and `plan.steps`; at once where the host can, one at a time where not.

        `notify(advice)` tells the user what the pass did on its own (e.g. ran tiled
        after running out of memory); it lands in every result's notices.

        For a latent upscaler (`plan.upscaler_kind == "latent"`) the images arrive
        at their source size and the backend upscales in latent space itself.
        Raises `Interrupted` when `should_stop()` turns true between steps.
        """
        ...


@dataclass
class Result:
    """What a run produced; `image` is the last stage that completed."""

    image: Image.Image
    plan: Plan
    #: the stages that completed, in order
    stages: list[str] = field(default_factory=list)
    interrupted: bool = False
    #: what happened to this image beyond the plan (first frame only, text or alpha dropped)
    notices: list[Advice] = field(default_factory=list)
    #: infotext fields of what its second pass ran with that the plan could not know (the backend's
    #: `pass_fields`, e.g. the distilled CFG); None removes the plan's field of that key
    pass_fields: dict[str, str | None] = field(default_factory=dict)

    @property
    def infotext_fields(self) -> dict[str, str]:
        """The plan's fields, with the size this image really reached (an interrupt may leave it
        smaller than the plan's target); none of the sizes when no stage ran."""
        fields = self.plan.infotext_fields()
        if not self.stages:
            fields.pop(REACHED_FROM_KEY, None)
            fields.pop(REACHED_TO_KEY, None)
        else:
            fields[REACHED_TO_KEY] = f"{self.image.width}x{self.image.height}"
        for key, value in self.pass_fields.items():
            if value is None:
                fields.pop(key, None)
            else:
                fields[key] = value
        return fields

    @property
    def reached(self) -> str:
        """Where the run got to, in words: the last stage, or the last whole pass of a progressive run."""
        if not self.stages:
            return "the first pass"
        if self.plan.passes:
            done = sum(stage == SECOND_PASS for stage in self.stages)
            return f"pass {done}/{len(self.plan.passes)}"
        return self.stages[-1]

    @property
    def advice(self) -> list[dict[str, str]]:
        """The plan's warnings, then this image's notices: one list for every front end."""
        return [a.as_dict() for a in (*self.plan.advice, *self.notices)]


@dataclass
class NamedResult:
    """A run on a named existing image, with the infotext to store in it (tab, API, folder mode)."""

    name: str
    result: Result
    infotext: str
    #: where it was written, when it was
    output: Path | None = None


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def _never_stop() -> bool:
    return False


class Pipeline:
    """Runs the stages for one image at a time.

    `upscaler_for(name)` returns the upscaler for a parameters' upscaler name
    (the adapter maps WebUI names to model files; the CLI maps paths).
    """

    def __init__(
        self,
        upscaler_for: Callable[[str], ImageUpscaler],
        backend: Backend | None = None,
        *,
        snap_multiple: int = SNAP_MULTIPLE,
    ) -> None:
        self.upscaler_for = upscaler_for
        self.backend = backend
        self.snap_multiple = snap_multiple

    @property
    def model_family(self) -> str:
        return self.backend.model_family if self.backend is not None else "sd15"

    def plan(self, image: Image.Image, params: HiresParams, *, first_pass_steps: int | None = None) -> Plan:
        return make_plan(image.size, params, self.model_family, first_pass_steps=first_pass_steps,
                         multiple=self.snap_multiple, has_second_pass=self.backend is not None)

    def run(
        self,
        image: Image.Image,
        params: HiresParams,
        *,
        first_pass_steps: int | None = None,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> Result:
        plan = self.plan(image, params, first_pass_steps=first_pass_steps)
        return self.run_batch([image], plan, progress=progress, should_stop=should_stop)[0]

    def run_batch(
        self,
        images: list[Image.Image],
        plan: Plan,
        *,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> list[Result]:
        """Images of the plan's source size (a WebUI batch) through `plan.stages`, pass after pass;
        the second pass takes them together.

        An interrupt leaves every image at the last stage all of them finished; in a progressive
        run, at the end of the last pass all of them finished (a pass's upscale alone is no result).
        """
        if any(image.size != plan.source for image in images):
            raise ValueError(f"run_batch takes images of the plan's size {plan.source}; plan other sizes apart")
        report = progress or _no_progress
        stop = should_stop or _never_stop
        results = [Result(_without_opaque_alpha(image), plan, notices=notices(image)) for image in images]
        finished_pass = [(result.image, len(result.stages)) for result in results]
        try:
            for step in plan.pass_plans:
                if plan.passes:
                    report(PASS_BEGINS, step.pass_number, step.pass_count)
                self._pass(results, step, report, stop)
                finished_pass = [(result.image, len(result.stages)) for result in results]
            if SHARPEN in plan.stages:
                if stop():
                    raise Interrupted("stopped before sharpening")
                _finished(results, SHARPEN, [sharpen(result.image, plan.params.sharpen_strength)
                                             for result in results])
                report(SHARPEN, 1, 1)
        except Interrupted:
            for result, (image, stages) in zip(results, finished_pass, strict=True):
                result.interrupted = True
                if plan.passes and stages:  # back to the end of the last whole pass
                    result.image, result.stages = image, result.stages[:stages]
        return results

    def _pass(self, results: list[Result], plan: Plan, report: Progress, stop: ShouldStop) -> None:
        """One pass over every image: upscale, second pass, color fix, as `plan.pass_stages` says."""
        stages = plan.pass_stages
        if UPSCALE in stages:
            _finished(results, UPSCALE, [self._upscale(result.image, plan, report, stop) for result in results])
        if SECOND_PASS not in stages or self.backend is None:
            return
        # img2img has no alpha: the picture goes in flattened, and its alpha comes back on the result
        background = getattr(self.backend, "background", DEFAULT_BACKGROUND)
        alphas = [result.image.getchannel("A") if result.image.mode in ("RGBA", "LA") else None for result in results]
        inputs = [_flatten(result.image, background) if alpha is not None else result.image
                  for result, alpha in zip(results, alphas, strict=True)]

        def notify(advice: Advice) -> None:
            for result in results:
                result.notices.append(advice)

        passed = self.backend.second_pass(
            inputs, plan, progress=lambda done, total: report(SECOND_PASS, done, total), should_stop=stop,
            notify=notify,
        )
        for result in results:
            result.pass_fields.update(getattr(self.backend, "pass_fields", None) or {})
        if COLOR_FIX in stages:
            if stop():
                _finished(results, SECOND_PASS, _with_alphas(passed, alphas))
                raise Interrupted("stopped before the color fix")
            _finished(results, SECOND_PASS, _with_alphas(passed, alphas))
            _finished(results, COLOR_FIX, _with_alphas(
                [color_fix(image, _at_target(flat, plan), plan.params.color_fix)
                 for image, flat in zip(passed, inputs, strict=True)], alphas))
            report(COLOR_FIX, 1, 1)
        else:
            _finished(results, SECOND_PASS, _with_alphas(passed, alphas))
        for result, alpha in zip(results, alphas, strict=True):
            if alpha is not None:
                result.notices.append(Advice(
                    "alpha_kept", "info", "image",
                    f"The image's transparency was kept apart: the picture went through the second pass flattened "
                    f"onto {background} (img2img has no alpha), and its alpha, upscaled, was put back."))

    def _upscale(self, image: Image.Image, plan: Plan, report: Progress, stop: ShouldStop) -> Image.Image:
        """Upscale to the plan's pre-fit size, then crop/fill/stretch to the target."""
        kind = plan.upscaler_kind
        # Latent modes without a backend and "None" have no pixel upscaler: resize plainly.
        upscaler = LanczosUpscaler() if kind in ("latent", "none") else self.upscaler_for(plan.params.upscaler)
        upscaled = upscaler.upscale(
            image, plan.resize.upscaled,
            progress=lambda done, total: report(UPSCALE, done, total), should_stop=stop,
        )
        return apply_fit(upscaled, plan.resize)


def _at_target(image: Image.Image, plan: Plan) -> Image.Image:
    """What went into the second pass, at the target size: a latent mode's pass got the image at its
    source size (it upscales the latent), so its colours are those of a plain resize."""
    if image.size == plan.target:
        return image
    return apply_fit(image.resize(plan.resize.upscaled, Image.Resampling.LANCZOS), plan.resize)


def _finished(results: list[Result], stage: str, images: list[Image.Image]) -> None:
    """Every image has been through `stage`: only then do the results show it."""
    for result, image in zip(results, images, strict=True):
        result.image = image
        result.stages.append(stage)


def _without_opaque_alpha(image: Image.Image) -> Image.Image:
    """An alpha channel with nothing transparent in it (a gallery's RGBA copy of an RGB picture) is no
    transparency to keep: the picture without it."""
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] == 255:
        kept = image.convert(image.mode[:-1])
        kept.info.update(image.info)
        return kept
    return image


def _flatten(image: Image.Image, background: str) -> Image.Image:
    """`image` composited onto `background`, as RGB (done here rather than left to the host, so the
    picture is the same in every WebUI)."""
    flat = Image.new("RGBA", image.size, background)
    flat.alpha_composite(image.convert("RGBA"))
    return flat.convert("RGB")


def _with_alphas(images: list[Image.Image], alphas: list[Image.Image | None]) -> list[Image.Image]:
    """Each image with its alpha put back (resized to it: a latent mode's pass upscales in latent space)."""
    done = []
    for image, alpha in zip(images, alphas, strict=True):
        if alpha is not None:
            image = image.convert("RGBA")
            image.putalpha(alpha if alpha.size == image.size else alpha.resize(image.size, Image.Resampling.LANCZOS))
        done.append(image)
    return done
