"""Warnings about a planned run, as data.

The rules are plain data (`RULES`): conditions over named facts and a message
template. Python evaluates them here; the page gets the same rules as JSON
(`rules_as_data`) and evaluates them with the same meaning, so the accordion,
the API and the logs always agree.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: "error": the run is refused (only the page evaluates those: the core refuses before it advises)
Level = Literal["info", "warning", "error"]

#: Upscaling by more than this per side in one pass invents structure.
MAX_COMFORTABLE_PASS_SCALE = 2.0
#: Latent upscalers blur below this denoise.
LATENT_MIN_DENOISE = 0.5
#: Hires steps above this multiple of the first pass's steps buy nothing.
MAX_STEPS_RATIO = 2


@dataclass(frozen=True)
class Ref:
    """A condition operand that names another fact instead of a constant."""

    fact: str


@dataclass(frozen=True)
class Rule:
    code: str
    level: Level
    #: the parameter the user should change
    field: str
    #: all must hold; each is (fact, operator, constant or Ref)
    when: tuple[tuple[str, str, Any], ...]
    #: str.format-style template over the facts, e.g. "{denoise}"
    message: str


@dataclass(frozen=True)
class Advice:
    code: str
    level: Level
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "level": self.level, "field": self.field, "message": self.message}


RULES: tuple[Rule, ...] = (
    Rule(
        "latent_low_denoise", "warning", "denoise",
        (("upscaler_kind", "==", "latent"), ("second_pass", "==", True), ("denoise", "<", LATENT_MIN_DENOISE)),
        "Latent upscalers need denoise of at least 0.5: at {denoise} the result will be blurry. "
        "Raise denoise to 0.5-0.7, or pick an ESRGAN-family upscaler.",
    ),
    # The parameters' validation refuses this run (HiresParams.errors); the page shows why as it is typed.
    Rule(
        "latent_without_second_pass", "error", "denoise",
        (("upscaler_kind", "==", "latent"), ("second_pass", "==", False)),
        "A Latent upscaler upscales inside the second pass: at denoise 0 nothing would be upscaled, so the run "
        "is refused. Set denoise to 0.5 or more, or pick an ESRGAN-family upscaler.",
    ),
    Rule(
        "high_denoise", "warning", "denoise",
        (("upscaler_kind", "!=", "latent"), ("denoise", ">", Ref("max_denoise"))),
        "Denoise {denoise} redraws most of the image: expect hallucinated detail and duplicated "
        "subjects. {denoise_range} keeps the composition of a {family} model.",
    ),
    # Flow models (Flux, SD3, Forge Neo's): the same denoise starts from more noise than SD's, yet the
    # composition holds until late; numbers from the hosts' schedules (docs/flux-and-neo-facts.md §5).
    Rule(
        "flow_denoise", "info", "denoise",
        (("flow", "==", True), ("second_pass", "==", True), ("upscaler_kind", "!=", "latent"),
         ("denoise", ">", Ref("denoise_high")), ("denoise", "<=", Ref("max_denoise"))),
        "A {family} model is rectified flow: at denoise {denoise} its pass starts from more noise than SD's at the "
        "same value and begins to move shapes. {denoise_range} refines detail; past {max_denoise} it redraws "
        "the picture.",
    ),
    Rule(
        "flux_cfg", "warning", "cfg_scale",
        (("family", "==", "flux"), ("second_pass", "==", True), ("cfg_override", ">", 1)),
        "Flux dev is guidance-distilled and runs at CFG 1: a Hires CFG of {cfg_override} burns the picture. Set "
        "Hires CFG to 0 (the first pass's) and steer with Hires distilled CFG.",
    ),
    Rule(
        "large_pass_scale", "warning", "passes",
        (("pass_scale", ">", MAX_COMFORTABLE_PASS_SCALE),),
        "Upscaling {pass_scale}x in one pass invents structure the first image did not have; "
        "2x or less per pass is safer: set Passes to 0 (auto) to get there in passes of 2x or less.",
    ),
    Rule(
        "too_large_for_family", "warning", "tiled",
        (("second_pass", "==", True), ("tileable", "==", True), ("tiled", "==", "off"),
         ("target_pixels", ">", Ref("comfortable_pixels"))),
        "{target} is more than a {family} model handles comfortably in one pass; "
        "set Tiled to auto or on to save memory.",
    ),
    Rule(
        "too_large_untiled", "warning", "scale",
        (("second_pass", "==", True), ("tileable", "==", False), ("target_pixels", ">", Ref("comfortable_pixels"))),
        "{target} is more than a {family} model handles well in one pass, and its second pass never runs tiled: "
        "the whole frame must fit in memory, and Flux-type models draw stripes and grids that large. Aim at about "
        "4 MP or less, or go further with denoise 0 (upscale only).",
    ),
    Rule(
        "unknown_family", "info", "tiled",
        (("known_family", "==", False),),
        "This extension does not know the loaded model's family: the presets are scale factors only, the second "
        "pass runs untiled, and the denoise advice is SD's.",
    ),
    Rule(
        "snapped", "info", "width",
        (("snapped", "==", True),),
        "{requested} is not a multiple of 64: snapped to {target}.",
    ),
    Rule(
        "many_hires_steps", "info", "hires_steps",
        (("second_pass", "==", True), ("hires_steps", ">", Ref("max_useful_steps"))),
        "{hires_steps} hires steps is far above the first pass's {first_pass_steps}: "
        "10-20 (or 0, the same as the first pass) is plenty at low denoise.",
    ),
    Rule(
        "no_upscaler", "info", "upscaler",
        (("upscaler_kind", "==", "none"),),
        "No upscaler: the image is resized plainly before the second pass.",
    ),
)

_OPERATORS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
              ">": operator.gt, ">=": operator.ge}


def _holds(facts: Mapping[str, Any], clause: tuple[str, str, Any]) -> bool:
    name, op, operand = clause
    if isinstance(operand, Ref):
        operand = facts.get(operand.fact)
    value = facts.get(name)
    # A missing fact means the rule cannot be judged: it does not fire.
    if value is None or operand is None:
        return False
    return bool(_OPERATORS[op](value, operand))


def _format_fact(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def evaluate(facts: Mapping[str, Any], rules: tuple[Rule, ...] = RULES) -> list[Advice]:
    """The advice whose conditions all hold for these facts, in rule order."""
    text = {name: _format_fact(value) for name, value in facts.items()}
    return [
        Advice(rule.code, rule.level, rule.field, rule.message.format_map(text))
        for rule in rules
        if all(_holds(facts, clause) for clause in rule.when)
    ]


def rules_as_data() -> list[dict[str, Any]]:
    """The rules as JSON-ready data, for the page's script and the API."""

    def operand(value: Any) -> Any:
        return {"fact": value.fact} if isinstance(value, Ref) else value

    return [
        {"code": r.code, "level": r.level, "field": r.field, "message": r.message,
         "when": [[name, op, operand(value)] for name, op, value in r.when]}
        for r in RULES
    ]
