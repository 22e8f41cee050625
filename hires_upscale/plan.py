"""The plan of one run: sizes, steps and advice, decided before any pixel moves."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from . import advice as advice_rules
from .advice import Advice
from .params import HiresParams, UpscalerKind
from .resolution import DEFAULT_MAX_PIXELS, SNAP_MULTIPLE, ModelFamily, ResizePlan, Size, family, plan_resize

UPSCALE, SECOND_PASS, COLOR_FIX, SHARPEN = "upscale", "second pass", "color fix", "sharpen"
#: Not a stage: the progress event that a progressive run's pass `done` of `total` begins.
PASS_BEGINS = "pass"

#: Infotext keys of the sizes a result was upscaled from and to.
REACHED_FROM_KEY, REACHED_TO_KEY = "Hires upscale from", "Hires upscale to"


def pass_label(number: int, count: int) -> str:
    """What progress texts put before a stage of pass `number` of `count` ("pass 2/2: "); nothing in one pass."""
    return f"pass {number}/{count}: " if count > 1 else ""


@dataclass(frozen=True)
class Plan:
    """Everything the stages need to know, so none of them recomputes it."""

    params: HiresParams
    family: ModelFamily
    resize: ResizePlan
    #: steps of the second pass (hires steps, or the first pass's when 0); None if unknown
    steps: int | None
    advice: tuple[Advice, ...]
    #: steps of the first pass, when the caller knows them
    first_pass_steps: int | None = None
    #: whether a second pass can run at all (a host with a diffusion model; not the command line)
    has_second_pass: bool = True
    #: the passes of a progressive run, each a one-pass plan from the size the last one reached;
    #: empty for a run in one pass
    passes: tuple[Plan, ...] = ()
    #: which pass of how many this plan is (1 of 1 for a run in one pass)
    pass_number: int = 1
    pass_count: int = 1

    @property
    def source(self) -> Size:
        return self.resize.source

    @property
    def target(self) -> Size:
        return self.resize.target

    @property
    def upscaler_kind(self) -> UpscalerKind:
        return self.params.upscaler_kind

    @property
    def second_pass(self) -> bool:
        """Denoise 0 means "upscale only"."""
        return self.params.denoise > 0

    @property
    def pass_label(self) -> str:
        return pass_label(self.pass_number, self.pass_count)

    @property
    def pass_plans(self) -> tuple[Plan, ...]:
        """The one-pass plans the run goes through: its passes, or itself."""
        return self.passes or (self,)

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this run goes through, in order, each pass's in turn, then sharpening: every
        front end counts progress from these."""
        stages = tuple(stage for step in self.pass_plans for stage in step.pass_stages)
        sharpen = self.params.sharpen and self.params.sharpen_strength > 0
        return stages + ((SHARPEN,) if sharpen else ())

    @property
    def pass_stages(self) -> tuple[str, ...]:
        """The stages of one pass: upscale, second pass, color fix, as they apply."""
        second_pass = self.second_pass and self.has_second_pass
        # a latent mode upscales inside the second pass; without one, it is a plain resize
        upscale = self.upscaler_kind != "latent" or not self.has_second_pass
        color_fix = second_pass and self.params.color_fix != "none"
        return tuple(stage for stage, runs in ((UPSCALE, upscale), (SECOND_PASS, second_pass),
                                               (COLOR_FIX, color_fix)) if runs)

    def facts(self) -> dict[str, Any]:
        return plan_facts(self.params, self.resize, self.family, self.first_pass_steps)

    def infotext_fields(self) -> dict[str, str]:
        """Our fields for the result's infotext: the parameters plus the sizes reached."""
        fields = self.params.infotext_fields()
        w, h = self.source
        tw, th = self.target
        fields[REACHED_FROM_KEY] = f"{w}x{h}"
        fields[REACHED_TO_KEY] = f"{tw}x{th}"
        return fields


def plan_facts(
    params: HiresParams, resize: ResizePlan, model_family: ModelFamily, first_pass_steps: int | None
) -> dict[str, Any]:
    """The named facts the advice rules are written against."""
    tw, th = resize.target
    rw, rh = resize.requested
    return {
        "upscaler_kind": params.upscaler_kind,
        "denoise": params.denoise,
        "second_pass": params.denoise > 0,
        "pass_scale": round(resize.scale ** (1 / pass_count(params, resize)), 2),
        "tiled": params.tiled,
        "target_pixels": tw * th,
        "comfortable_pixels": model_family.comfortable_pixels,
        "family": model_family.name,
        "known_family": model_family.known,
        "tileable": model_family.tileable,
        "flow": model_family.flow,
        "denoise_range": model_family.denoise_text,
        "denoise_high": model_family.denoise_range[1],
        "max_denoise": model_family.max_denoise,
        "cfg_override": params.cfg_scale,
        "target": f"{tw}x{th}",
        "requested": f"{rw}x{rh}",
        "snapped": resize.snapped,
        "hires_steps": params.hires_steps,
        "first_pass_steps": first_pass_steps,
        "max_useful_steps": advice_rules.MAX_STEPS_RATIO * first_pass_steps if first_pass_steps else None,
    }


def make_plan(
    source: Size,
    params: HiresParams,
    family_name: str = "sd15",
    *,
    first_pass_steps: int | None = None,
    multiple: int = SNAP_MULTIPLE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    has_second_pass: bool = True,
) -> Plan:
    """Validate the parameters and plan one run from an image of `source` size.

    Raises `ParamsError` for invalid parameters and `TargetTooLargeError` above the limit.
    """
    params.check()
    model_family = family(family_name)
    resize = plan_resize(
        source,
        mode=params.resize_mode,
        scale=params.scale,
        width=params.width,
        height=params.height,
        preset=params.preset,
        fit=params.fit,
        family_name=model_family.name,
        multiple=multiple,
        max_pixels=max_pixels,
    )
    steps = params.hires_steps or first_pass_steps
    facts = plan_facts(params, resize, model_family, first_pass_steps)
    plan = Plan(params, model_family, resize, steps, tuple(advice_rules.evaluate(facts)), first_pass_steps,
                has_second_pass)
    count = pass_count(params, resize)
    if count == 1 or not has_second_pass:
        return plan
    return replace(plan, passes=_passes(plan, count, multiple, max_pixels))


def pass_count(params: HiresParams, resize: ResizePlan) -> int:
    """How many passes reach the target: the parameters' `passes`, or with 0 the fewest of at most
    2x each (never more than the field allows); one without a second pass."""
    if params.denoise <= 0:
        return 1
    if params.passes:
        return params.passes
    fewest = math.ceil(math.log2(resize.scale) - 1e-9) if resize.scale > 1 else 1
    return max(1, min(fewest, _MAX_PASSES))


_MAX_PASSES = 4


def _passes(plan: Plan, count: int, multiple: int, max_pixels: int) -> tuple[Plan, ...]:
    """`count` one-pass plans from the source to the plan's target, each the same factor: the last
    reaches the target exactly (and fits it as asked); those before keep the source's aspect."""
    factor = plan.resize.scale ** (1 / count)
    passes, size = [], plan.source
    for number in range(1, count + 1):
        if number < count:
            resize = plan_resize(size, mode="scale", scale=factor, width=0, height=0, preset="", fit="stretch",
                                 family_name=plan.family.name, multiple=multiple, max_pixels=max_pixels)
        else:
            width, height = plan.target
            resize = plan_resize(size, mode="size", scale=1.0, width=width, height=height, preset="",
                                 fit=plan.params.fit, family_name=plan.family.name, multiple=multiple,
                                 max_pixels=max_pixels)
        passes.append(replace(plan, resize=resize, advice=(), pass_number=number, pass_count=count))
        size = resize.target
    return tuple(passes)
