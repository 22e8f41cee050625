"""The one parameters model of a hires-upscale run.

Every entry point (the WebUI accordion, the API, infotext paste, the command
line) builds a `HiresParams` through `HiresParams.from_mapping`, so defaults,
ranges, coercion and error messages exist once. Each field's metadata is the
single description from which validation, the infotext keys and the JSON schema
are derived.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import FieldError, ParamsError

ResizeMode = Literal["scale", "size", "preset"]
FitMode = Literal["crop", "fill", "stretch"]
UpscalerKind = Literal["model", "latent", "pixel", "none"]

RESIZE_MODES: tuple[str, ...] = ("scale", "size", "preset")
#: auto: tile the second pass when it would not fit in free GPU memory, and retry
#: tiled after an out-of-memory error; on: always; off: never
TILED_MODES: tuple[str, ...] = ("auto", "on", "off")
FIT_MODES: tuple[str, ...] = ("crop", "fill", "stretch")
MAX_SEED = 2**32 - 1

# Our infotext keys all start with this prefix followed by a word. The WebUI's own
# hires fix writes "Hires upscale" and "Hires upscaler" as exact keys, and pasting
# those switches its hires fix on, so we never write either bare key.
INFOTEXT_PREFIX = "Hires upscale"

# Names the WebUI gives its non-model upscalers; anything else is a model file.
_PIXEL_UPSCALERS = {"lanczos", "nearest", "bicubic", "bilinear"}
_NO_UPSCALER = {"none", ""}


def upscaler_kind(name: str) -> UpscalerKind:
    """What sort of upscaler a WebUI upscaler name denotes."""
    key = name.strip().lower()
    if key in _NO_UPSCALER:
        return "none"
    if key.startswith("latent"):
        return "latent"
    if key in _PIXEL_UPSCALERS:
        return "pixel"
    return "model"


def _spec(
    default: Any,
    *,
    key: str,
    help: str,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
    zero_means: str | None = None,
    nullable: bool = False,
    aliases: Mapping[Any, str] | None = None,
) -> Any:
    """A dataclass field carrying the facts every entry point needs about it."""
    meta = {
        "key": f"{INFOTEXT_PREFIX} {key}",
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "choices": choices,
        "zero_means": zero_means,
        "nullable": nullable,
        # older spellings still accepted (API clients, pasted infotext of earlier versions)
        "aliases": dict(aliases or {}),
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class HiresParams:
    """Everything that decides what a hires-upscale run does. Defaults mean "off"."""

    enabled: bool = _spec(False, key="enabled", help="Run the hires upscale after the first pass.")
    upscaler: str = _spec(
        "Lanczos",
        key="upscaler",
        help="Upscaler name as the WebUI lists it: an ESRGAN-family model (4x-UltraSharp, "
        "Remacri...), a Latent mode, Lanczos, Nearest or None.",
    )
    resize_mode: str = _spec(
        "scale", key="mode", choices=RESIZE_MODES,
        help="scale: multiply the size; size: reach width x height; preset: a named preset.",
    )
    scale: float = _spec(2.0, key="scale", minimum=1.0, maximum=8.0, help="Scale factor per side.")
    width: int = _spec(
        0, key="width", minimum=0, maximum=16384, zero_means="from the height and the aspect",
        help="Target width in pixels (resize mode 'size'), snapped to a multiple of 64.",
    )
    height: int = _spec(
        0, key="height", minimum=0, maximum=16384, zero_means="from the width and the aspect",
        help="Target height in pixels (resize mode 'size'), snapped to a multiple of 64.",
    )
    preset: str = _spec("", key="preset", help="Preset name (resize mode 'preset'), e.g. '2x'.")
    fit: str = _spec(
        "crop", key="fit", choices=FIT_MODES,
        help="When the target aspect differs: crop (fill and crop), fill (fit and extend the "
        "edges) or stretch.",
    )
    denoise: float = _spec(
        0.3, key="denoise", minimum=0.0, maximum=1.0, zero_means="upscale only, no second pass",
        help="Denoising strength of the second pass: 0.2-0.45 for ESRGAN-family upscalers, "
        ">= 0.5 for Latent modes.",
    )
    hires_steps: int = _spec(
        0, key="steps", minimum=0, maximum=150, zero_means="same as the first pass",
        help="Sampling steps of the second pass; 10-20 is plenty.",
    )
    sampler: str = _spec("", key="sampler", help="Sampler of the second pass; empty = same as the first pass.")
    scheduler: str = _spec("", key="scheduler", help="Scheduler of the second pass; empty = same as the first pass.")
    tiled: str = _spec(
        "auto", key="tiled", choices=TILED_MODES,
        aliases={True: "on", False: "off", "true": "on", "false": "off", "True": "on", "False": "off"},
        help="Low-VRAM mode for the second pass (tiled VAE and UNet): auto = when it would not fit in free "
        "GPU memory, and again tiled after an out-of-memory error; on = always; off = never.",
    )
    tile_size: int = _spec(
        0, key="tile size", minimum=0, maximum=4096, zero_means="chosen from free memory",
        help="Tile size in image pixels: the upscaler's input tiles, and the second pass's tiles when tiled.",
    )
    sharpen: bool = _spec(False, key="sharpen", help="Apply one gentle unsharp mask to the final image.")
    sharpen_strength: float = _spec(
        0.3, key="sharpen strength", minimum=0.0, maximum=1.0, help="Unsharp mask amount (0.3 = 30%)."
    )
    seed: int = _spec(
        -1, key="seed", minimum=-1, maximum=MAX_SEED, help="Seed override for existing images; -1 = the image's own."
    )
    cfg_scale: float = _spec(
        0.0, key="cfg", minimum=0.0, maximum=30.0, zero_means="the image's own",
        help="CFG scale override for existing images.",
    )
    negative_prompt: str | None = _spec(
        None, key="negative", nullable=True,
        help="Negative prompt override for existing images; null = the image's own.",
    )

    # -- construction -------------------------------------------------------

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, base: HiresParams | None = None) -> HiresParams:
        """Build validated parameters from API JSON, settings or UI values.

        Raises `ParamsError` listing every bad or unknown field.
        """
        base = base or cls()
        errors: list[FieldError] = []
        known = {f.name: f for f in dataclasses.fields(cls)}
        updates: dict[str, Any] = {}
        for name, raw in values.items():
            spec = known.get(name)
            if spec is None:
                errors.append(FieldError(name, raw, f"one of the fields {', '.join(known)}"))
                continue
            try:
                updates[name] = _coerce(spec, raw)
            except _Invalid as bad:
                errors.append(FieldError(name, raw, bad.allowed))
        if errors:
            raise ParamsError(errors)
        params = dataclasses.replace(base, **updates)
        params.check()
        return params

    def replace(self, **changes: Any) -> HiresParams:
        """A copy with some fields changed, validated like any other input."""
        return HiresParams.from_mapping(changes, base=self)

    # -- validation ---------------------------------------------------------

    def errors(self) -> list[FieldError]:
        """Every problem with these values, each naming the field and what is allowed."""
        errors: list[FieldError] = []
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            try:
                _coerce(spec, value)
            except _Invalid as bad:
                errors.append(FieldError(spec.name, value, bad.allowed))
        if self.resize_mode == "size" and self.width == 0 and self.height == 0:
            errors.append(FieldError("width", 0, "a width or a height above 0 in resize mode 'size'"))
        if self.resize_mode == "preset" and not self.preset:
            errors.append(FieldError("preset", self.preset, "a preset name in resize mode 'preset'"))
        return errors

    def check(self) -> None:
        """Raise `ParamsError` unless every field is valid."""
        errors = self.errors()
        if errors:
            raise ParamsError(errors)

    # -- views --------------------------------------------------------------

    @property
    def upscaler_kind(self) -> UpscalerKind:
        return upscaler_kind(self.upscaler)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def infotext_fields(self) -> dict[str, str]:
        """Key/values for the WebUI's infotext (`p.extra_generation_params`).

        Always the essentials, plus every other field that differs from its
        default, so that `from_infotext_fields` gives back the same parameters.
        """
        always = {"enabled", "upscaler", "resize_mode", "denoise", "hires_steps"}
        default = HiresParams()
        fields: dict[str, str] = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name not in always and value == getattr(default, spec.name):
                continue
            fields[spec.metadata["key"]] = _to_text(value)
        return fields

    @classmethod
    def from_infotext_fields(cls, fields: Mapping[str, str]) -> HiresParams | None:
        """Parameters from parsed infotext key/values; None when none of ours are there.

        Keys that are not ours are ignored (the infotext holds the whole generation).
        """
        by_key = {f.metadata["key"]: f.name for f in dataclasses.fields(cls)}
        ours = {by_key[k]: v for k, v in fields.items() if k in by_key}
        if not ours:
            return None
        values = {name: (None if raw == "None" and name == "negative_prompt" else raw) for name, raw in ours.items()}
        values.setdefault("enabled", True)
        return cls.from_mapping(values)


class _Invalid(Exception):
    def __init__(self, allowed: str) -> None:
        self.allowed = allowed


def _allowed_text(spec: dataclasses.Field) -> str:
    meta = spec.metadata
    if meta["choices"]:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    kind = _field_type(spec)
    if kind in (int, float):
        noun = "an integer" if kind is int else "a number"
        text = f"{noun} from {_to_text(meta['minimum'])} to {_to_text(meta['maximum'])}"
        if meta["zero_means"]:
            text += f" (0 = {meta['zero_means']})"
        return text
    if kind is bool:
        return "true or false"
    return "a string or null" if meta["nullable"] else "a string"


def _field_type(spec: dataclasses.Field) -> type:
    annotation = str(spec.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if annotation == name:
            return kind
    return str


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(spec: dataclasses.Field, raw: Any) -> Any:
    """The value of a field from JSON or infotext text, or `_Invalid`."""
    meta = spec.metadata
    kind = _field_type(spec)
    allowed = _allowed_text(spec)
    if raw is None:
        if meta["nullable"]:
            return None
        raise _Invalid(allowed)
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise _Invalid(allowed)
    if kind in (int, float):
        if isinstance(raw, bool):
            raise _Invalid(allowed)
        try:
            number = float(raw.strip()) if isinstance(raw, str) else float(raw)
        except (TypeError, ValueError, OverflowError):
            raise _Invalid(allowed) from None
        if not math.isfinite(number):
            raise _Invalid(allowed)
        if kind is int:
            if number != int(number):
                raise _Invalid(allowed)
            number = int(number)
        if not meta["minimum"] <= number <= meta["maximum"]:
            raise _Invalid(allowed)
        return number
    for alias, value in meta["aliases"].items():
        if type(raw) is type(alias) and raw == alias:  # True must not match 1
            return value
    if not isinstance(raw, str):
        raise _Invalid(allowed)
    if meta["choices"] and raw not in meta["choices"]:
        raise _Invalid(allowed)
    return raw


def _to_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if value == round(value, 6) else repr(value)
    return str(value)


def json_schema() -> dict[str, Any]:
    """JSON schema of `HiresParams` for the API; every property optional, defaults shown."""
    properties: dict[str, Any] = {}
    for spec in dataclasses.fields(HiresParams):
        meta = spec.metadata
        kind = _field_type(spec)
        prop: dict[str, Any] = {"description": meta["help"], "default": spec.default}
        if kind is bool:
            prop["type"] = "boolean"
        elif kind is int:
            prop.update(type="integer", minimum=meta["minimum"], maximum=meta["maximum"])
        elif kind is float:
            prop.update(type="number", minimum=meta["minimum"], maximum=meta["maximum"])
        else:
            prop["type"] = ["string", "null"] if meta["nullable"] else "string"
        if meta["choices"]:
            prop["enum"] = list(meta["choices"])
        properties[spec.name] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "HiresParams",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }


def field_names() -> tuple[str, ...]:
    """Field names in declaration order (the order of the WebUI script's arguments)."""
    return tuple(f.name for f in dataclasses.fields(HiresParams))


#: The WebUI script's arguments, in `ui()` order: what `alwayson_scripts` "args" lists.
#: The existing-image overrides (seed, cfg_scale, negative_prompt) are not among them.
SCRIPT_FIELDS: tuple[str, ...] = field_names()[: field_names().index("sharpen_strength") + 1]
