"""The plan of one run: sizes, steps and advice, decided before any pixel moves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import advice as advice_rules
from .advice import Advice
from .params import HiresParams, UpscalerKind
from .resolution import DEFAULT_MAX_PIXELS, SNAP_MULTIPLE, ModelFamily, ResizePlan, Size, family, plan_resize

UPSCALE, SECOND_PASS, COLOR_FIX, SHARPEN = "upscale", "second pass", "color fix", "sharpen"
#: Infotext keys of the sizes a result was upscaled from and to.
REACHED_FROM_KEY, REACHED_TO_KEY = "Hires upscale from", "Hires upscale to"


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
    def stages(self) -> tuple[str, ...]:
        """The stages this run goes through, in order: every front end counts progress from these."""
        second_pass = self.second_pass and self.has_second_pass
        # a latent mode upscales inside the second pass; without one, it is a plain resize
        upscale = self.upscaler_kind != "latent" or not self.has_second_pass
        color_fix = second_pass and self.params.color_fix != "none"
        sharpen = self.params.sharpen and self.params.sharpen_strength > 0
        return tuple(stage for stage, runs in ((UPSCALE, upscale), (SECOND_PASS, second_pass),
                                               (COLOR_FIX, color_fix), (SHARPEN, sharpen)) if runs)

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
        "pass_scale": round(resize.scale, 2),
        "tiled": params.tiled,
        "target_pixels": tw * th,
        "comfortable_pixels": model_family.comfortable_pixels,
        "family": model_family.name,
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
    return Plan(params, model_family, resize, steps, tuple(advice_rules.evaluate(facts)), first_pass_steps,
                has_second_pass)
