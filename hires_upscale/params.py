"""The one parameters model of a hires-upscale run.

Every entry point (the WebUI accordion, the API, infotext paste, the command
line) builds a `HiresParams` through `HiresParams.from_mapping`, so defaults,
ranges, coercion and error messages exist once. Each field's metadata is the
single description from which validation, the infotext keys and the JSON schema
are derived.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
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
#: none | wavelet | adain (see colorfix.py); kept here too so params.py imports nothing heavy
COLOR_FIX_MODES: tuple[str, ...] = ("none", "wavelet", "adain")
MAX_SEED = 2**32 - 1
#: In `modules`, the checkpoint's own VAE and text encoders, with no separate file (Forge's word for it).
BUILT_IN_MODULES = "Built-in"
#: The most separate module files a second pass takes (a VAE and text encoders: Flux has three).
MAX_MODULES = 4

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
    label: str,
    minimum: float | None = None,
    maximum: float | None = None,
    step: float | None = None,
    choices: tuple[str, ...] | None = None,
    zero_means: str | None = None,
    aliases: Mapping[Any, str] | None = None,
    applies: Callable[[HiresParams], bool] | None = None,
) -> Any:
    """A dataclass field carrying the facts every entry point needs about it: validation,
    the infotext key, the JSON schema, and the UI control (label, range, step, hover hint)."""
    meta = {
        "key": f"{INFOTEXT_PREFIX} {key}",
        "help": help,
        "label": label,
        "minimum": minimum,
        "maximum": maximum,
        "step": step,
        "choices": choices,
        "zero_means": zero_means,
        # older spellings still accepted (API clients, pasted infotext of earlier versions); a None
        # alias makes the field nullable in JSON
        "aliases": dict(aliases or {}),
        # whether a run with these parameters uses this field at all (the infotext says only what was used)
        "applies": applies or _always,
    }
    return field(default=default, metadata=meta)


def _always(params: HiresParams) -> bool:
    return True


def _in_mode(mode: str) -> Callable[[HiresParams], bool]:
    return lambda params: params.resize_mode == mode


def _with_second_pass(params: HiresParams) -> bool:
    return params.denoise > 0


#: JSON null for a text override means "the same as the first pass", like the empty string.
_NULL_IS_EMPTY = {None: ""}


@dataclass(frozen=True)
class HiresParams:
    """Everything that decides what a hires-upscale run does. Defaults mean "off"."""

    enabled: bool = _spec(False, key="enabled", label="Hires upscale",
                          help="Run the hires upscale after the first pass.")
    upscaler: str = _spec(
        "Lanczos", key="upscaler", label="Upscaler",
        help="ESRGAN-family models (4x-UltraSharp, Remacri, anime models) add detail; Latent modes need "
        "denoise 0.5 or more. Lanczos, Nearest and None resize plainly.",
    )
    resize_mode: str = _spec(
        "scale", key="mode", choices=RESIZE_MODES, label="Resize by",
        help="scale: multiply the size; size: reach width x height; preset: a named preset.",
    )
    scale: float = _spec(2.0, key="scale", minimum=1.0, maximum=8.0, step=0.05, label="Scale",
                         help="Scale factor per side; more than 2 in one pass invents structure.",
                         applies=_in_mode("scale"))
    width: int = _spec(
        0, key="width", minimum=0, maximum=16384, step=64, zero_means="from the height and the aspect",
        label="Width (0 = from aspect)",
        help="Target width in pixels (resize mode 'size'), snapped to a multiple of 64.",
        applies=_in_mode("size"),
    )
    height: int = _spec(
        0, key="height", minimum=0, maximum=16384, step=64, zero_means="from the width and the aspect",
        label="Height (0 = from aspect)",
        help="Target height in pixels (resize mode 'size'), snapped to a multiple of 64.",
        applies=_in_mode("size"),
    )
    preset: str = _spec("", key="preset", label="Preset",
                        help="Preset name (resize mode 'preset'), e.g. '2x' or 'Portrait 2:3'.",
                        applies=_in_mode("preset"))
    fit: str = _spec(
        "crop", key="fit", choices=FIT_MODES, label="When the aspect differs",
        help="When the target aspect differs: crop (fill and crop), fill (fit and extend the "
        "edges) or stretch.",
        applies=lambda params: params.resize_mode != "scale",
    )
    denoise: float = _spec(
        0.3, key="denoise", minimum=0.0, maximum=1.0, step=0.01, zero_means="upscale only, no second pass",
        label="Denoising strength",
        help="How much the second pass may change: 0.2-0.45 with ESRGAN-family upscalers, 0.5-0.7 with "
        "Latent. Higher invents detail and duplicates subjects.",
    )
    hires_steps: int = _spec(
        0, key="steps", minimum=0, maximum=150, step=1, zero_means="same as the first pass", label="Hires steps",
        help="Sampling steps of the second pass; 0 = the same as the first pass. 10-20 is plenty.",
        applies=_with_second_pass,
    )
    sampler: str = _spec("", key="sampler", label="Hires sampler", aliases=_NULL_IS_EMPTY,
                         help="Sampler of the second pass; empty = the same as the first pass.",
                         applies=_with_second_pass)
    scheduler: str = _spec("", key="scheduler", label="Hires schedule type", aliases=_NULL_IS_EMPTY,
                           help="Scheduler of the second pass; empty = the same as the first pass.",
                           applies=_with_second_pass)
    tiled: str = _spec(
        "auto", key="tiled", choices=TILED_MODES, label="Tiled (low VRAM)",
        aliases={True: "on", False: "off", "true": "on", "false": "off", "True": "on", "False": "off"},
        help="Low-VRAM mode for the second pass (tiled VAE and UNet). auto: only when it would not fit in free "
        "GPU memory, or after running out of it; on: always (4-8 GB cards, very large targets); off: never.",
        applies=_with_second_pass,
    )
    tile_size: int = _spec(
        0, key="tile size", minimum=0, maximum=4096, step=32, zero_means="chosen from free memory",
        label="Tile size (0 = from free memory)",
        help="Tile size in image pixels: the upscaler's input tiles, and the second pass's tiles when tiled.",
    )
    sharpen: bool = _spec(False, key="sharpen", label="Sharpen",
                          help="One gentle unsharp mask on the final image only.")
    sharpen_strength: float = _spec(
        0.3, key="sharpen strength", minimum=0.0, maximum=1.0, step=0.05, label="Sharpen strength",
        help="Unsharp mask amount (0.3 = 30%).",
        applies=lambda params: params.sharpen,
    )
    # The second pass's overrides: empty, 0 or -1 mean "the same as the first pass" (or, for an
    # existing image, as its PNG info says).
    checkpoint: str = _spec(
        "", key="checkpoint", label="Hires checkpoint", aliases=_NULL_IS_EMPTY,
        help="Checkpoint of the second pass; empty = the same as the first pass. Loaded once per batch; the "
        "first pass's checkpoint is back afterwards.",
        applies=_with_second_pass,
    )
    prompt: str = _spec(
        "", key="prompt", label="Hires prompt", aliases=_NULL_IS_EMPTY,
        help="Prompt of the second pass; empty = the same as the first pass. [prompt] stands for the first "
        "pass's prompt, so '[prompt], sharp focus' appends. LoRA tags work here too.",
        applies=_with_second_pass,
    )
    negative_prompt: str = _spec(
        "", key="negative", label="Hires negative prompt", aliases=_NULL_IS_EMPTY,
        help="Negative prompt of the second pass; empty = the same as the first pass. [prompt] stands for "
        "the first pass's negative prompt.",
        applies=_with_second_pass,
    )
    cfg_scale: float = _spec(
        0.0, key="cfg", minimum=0.0, maximum=30.0, step=0.5, zero_means="the same as the first pass",
        label="Hires CFG scale (0 = same)", help="CFG scale of the second pass; 0 = the same as the first pass.",
        applies=_with_second_pass,
    )
    seed: int = _spec(
        -1, key="seed", minimum=-1, maximum=MAX_SEED, step=1, label="Hires seed (-1 = same)",
        help="Seed of the second pass; -1 = the image's own. In a batch, image n gets this seed + n.",
        applies=_with_second_pass,
    )
    passes: int = _spec(
        1, key="passes", minimum=0, maximum=4, step=1, zero_means="auto: the fewest passes of at most 2x each",
        label="Passes (0 = auto)", applies=_with_second_pass, aliases={"auto": 0},
        help="Reach the target in this many passes, each an upscale and a second pass (4x as 2x then 2x, "
        "each pass with the same denoise and hires steps); 0 = auto, at most 2x per pass. More than 2x in "
        "one pass invents structure.",
    )
    color_fix: str = _spec(
        "wavelet", key="color fix", choices=COLOR_FIX_MODES, label="Color fix",
        help="After the second pass, take the coarse colours (bands above about 32 px) from the upscaled image "
        "that went into it and keep the pass's detail: removes colour drift and tile-to-tile shades. wavelet: "
        "by frequency band; adain: global mean and contrast per channel; none: the pass as it came out.",
        applies=_with_second_pass,
    )
    modules: tuple[str, ...] = _spec(
        (), key="modules", label="Hires VAE / text encoder", aliases={None: ()},  # null: a Gradio multiselect's none
        help="VAE of the second pass (on Forge also its text encoders): file names from the WebUI's VAE folder "
        f"(and Forge's text_encoder folder); empty = the same as the first pass; '{BUILT_IN_MODULES}' = the "
        "checkpoint's own. The first pass's are back afterwards.",
        applies=_with_second_pass,
    )

    distilled_cfg: float = _spec(
        0.0, key="distilled cfg", minimum=0.0, maximum=30.0, step=0.1, zero_means="the same as the first pass",
        label="Hires distilled CFG (0 = same)",
        help="Forge: the distilled CFG (guidance) of a Flux dev second pass, and on Forge Neo the shift of "
        "Lumina 2, Z-Image and Wan; 0 = the same as the first pass. Models that read neither ignore it (the "
        "result says so).",
        applies=_with_second_pass,
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
        if self.enabled and self.upscaler_kind == "latent" and self.denoise == 0:
            # A latent mode upscales inside the second pass: without one, nothing would be upscaled.
            errors.append(FieldError("denoise", 0, "above 0 with a Latent upscaler, which upscales inside the "
                                     "second pass (0.5-0.7); to upscale only, pick an ESRGAN-family or Lanczos "
                                     "upscaler"))
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

    def second_pass_prompt(self, first_pass: str) -> str:
        """The second pass's prompt: the override with `[prompt]` standing for the first pass's, or that one."""
        return _with_first_pass(self.prompt, first_pass)

    def second_pass_negative_prompt(self, first_pass: str) -> str:
        return _with_first_pass(self.negative_prompt, first_pass)

    def second_pass_seed(self, first_pass: int, index: int) -> int:
        """Image `index` of a job keeps its own seed, or gets the override + index (as the WebUI counts seeds)."""
        return first_pass if self.seed < 0 else (self.seed + index) % (MAX_SEED + 1)

    def second_pass_cfg_scale(self, first_pass: float) -> float:
        return self.cfg_scale or first_pass

    def second_pass_distilled_cfg(self, first_pass: float | None) -> float | None:
        """The override, else the first pass's (None: the host's default, or a host without the field)."""
        return self.distilled_cfg or first_pass

    def as_dict(self) -> dict[str, Any]:
        """The values as JSON has them (a list of names as a list)."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(self).items()}

    @staticmethod
    def infotext_key(name: str) -> str:
        """The infotext key of field `name` ("Hires upscale ...")."""
        return HiresParams.__dataclass_fields__[name].metadata["key"]

    def applies(self, name: str) -> bool:
        """Whether a run with these parameters uses field `name` (a scale in resize mode 'size' does not)."""
        return bool(self.__dataclass_fields__[name].metadata["applies"](self))

    def used(self) -> HiresParams:
        """These parameters as a run uses them: the fields that do not apply at their defaults."""
        return dataclasses.replace(self, **{spec.name: spec.default for spec in dataclasses.fields(self)
                                            if not self.applies(spec.name)})

    def infotext_fields(self) -> dict[str, str]:
        """Key/values for the WebUI's infotext (`p.extra_generation_params`).

        Only what the run uses: the essentials, plus every other field that applies and differs
        from its default, so that `from_infotext_fields` gives back `self.used()`.
        """
        essentials = {"enabled", "upscaler", "resize_mode", "denoise", "hires_steps", "color_fix"}
        used, default = self.used(), HiresParams()
        fields: dict[str, str] = {}
        for spec in dataclasses.fields(used):
            value = getattr(used, spec.name)
            if not used.applies(spec.name) or (spec.name not in essentials and value == getattr(default, spec.name)):
                continue
            word = next((w for w, v in _word_aliases(spec).items() if v == value), None)
            fields[spec.metadata["key"]] = word or _to_text(value)
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
        ours.setdefault("enabled", True)
        return cls.from_mapping(ours)


#: In a hires prompt, the first pass's prompt (in the hires negative prompt, the first pass's negative).
FIRST_PASS_PROMPT = "[prompt]"


def _with_first_pass(override: str, first_pass: str) -> str:
    if not override.strip():
        return first_pass
    return override.replace(FIRST_PASS_PROMPT, first_pass)


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
        words = _word_aliases(spec)
        if words:
            text += ", or " + ", ".join(repr(word) for word in words)
        return text
    if kind is bool:
        return "true or false"
    if kind is tuple:
        return (f"a list of at most {MAX_MODULES} file names ([] = the same as the first pass, "
                f"[{BUILT_IN_MODULES!r}] = the checkpoint's own)")
    return "a string or null" if _nullable(spec) else "a string"


def _field_type(spec: dataclasses.Field) -> type:
    """bool, int, float, str or tuple (of strings): every field's default is a value of its type."""
    return type(spec.default)


def _nullable(spec: dataclasses.Field) -> bool:
    return None in spec.metadata["aliases"]


def _word_aliases(spec: dataclasses.Field) -> dict[str, Any]:
    """A number field's words for some of its values ('auto' for 0 passes): accepted, and written
    into the infotext instead of the number they stand for."""
    if _field_type(spec) not in (int, float):
        return {}
    return {alias: value for alias, value in spec.metadata["aliases"].items() if isinstance(alias, str)}


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(spec: dataclasses.Field, raw: Any) -> Any:
    """The value of a field from JSON or infotext text, or `_Invalid`."""
    meta = spec.metadata
    kind = _field_type(spec)
    allowed = _allowed_text(spec)
    for alias, value in meta["aliases"].items():
        if type(raw) is type(alias) and raw == alias:  # True must not match 1
            return value
    if raw is None:
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
    if kind is tuple:
        return _names(raw, allowed)
    if not isinstance(raw, str):
        raise _Invalid(allowed)
    if meta["choices"] and raw not in meta["choices"]:
        raise _Invalid(allowed)
    return raw


def _names(raw: Any, allowed: str) -> tuple[str, ...]:
    """A list of names from JSON (a list), the UI (a list) or infotext (the JSON text of one)."""
    if isinstance(raw, str):
        text = raw.strip()
        if not text.startswith("["):
            raw = [text] if text else []  # a hand-written single name
        else:
            try:
                raw = json.loads(text)
            except ValueError:
                raise _Invalid(allowed) from None
    if not isinstance(raw, (list, tuple)) or len(raw) > MAX_MODULES:
        raise _Invalid(allowed)
    if not all(isinstance(name, str) and name.strip() for name in raw):
        raise _Invalid(allowed)
    names = tuple(dict.fromkeys(name.strip() for name in raw))
    if BUILT_IN_MODULES in names and len(names) > 1:
        raise _Invalid(f"{allowed}; {BUILT_IN_MODULES!r} goes alone")
    return names


def _to_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if value == round(value, 6) else repr(value)
    if isinstance(value, tuple):
        return json.dumps(list(value), ensure_ascii=False)
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
        elif kind in (int, float):
            number = {"type": "integer" if kind is int else "number", "minimum": meta["minimum"],
                      "maximum": meta["maximum"]}
            words = list(_word_aliases(spec))
            if words:
                prop["anyOf"] = [number, {"type": "string", "enum": words}]
            else:
                prop.update(number)
        elif kind is tuple:
            prop.update(type="array", items={"type": "string", "minLength": 1}, maxItems=MAX_MODULES,
                        default=list(spec.default))
        else:
            prop["type"] = ["string", "null"] if _nullable(spec) else "string"
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


def hover_hints() -> dict[str, str]:
    """Control label -> its hint, for the page's hover hints (the labels are the UI's, from the same metadata)."""
    return {spec.metadata["label"]: spec.metadata["help"] for spec in dataclasses.fields(HiresParams)}


def field_names() -> tuple[str, ...]:
    """Field names in declaration order (the order of the WebUI script's arguments)."""
    return tuple(f.name for f in dataclasses.fields(HiresParams))


#: The WebUI script's arguments, in `ui()` order: what a positional `alwayson_scripts` "args" lists.
#: New fields are only ever appended, so older positional arrays keep their meaning.
SCRIPT_FIELDS: tuple[str, ...] = field_names()
