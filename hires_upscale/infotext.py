"""Reading and writing the WebUI's "parameters" text (infotext).

The format, as the WebUI writes it into PNG files:

    a prompt, possibly
    over several lines
    Negative prompt: the negative prompt
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Hires upscale denoise: 0.3

Values that contain a comma, a colon or a newline are JSON-quoted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# The WebUI's own key/value pattern, so that what we write it reads back the same.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_NEGATIVE = "Negative prompt:"


def quote(value: str) -> str:
    """Quote a value the way the WebUI does, only when it has to be."""
    if "," not in value and "\n" not in value and ":" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def format_fields(fields: Mapping[str, object]) -> str:
    """One infotext line from key/values; None values are left out."""
    return ", ".join(f"{key}: {quote(str(value))}" for key, value in fields.items() if value is not None)


def parse_fields(line: str) -> dict[str, str]:
    """Key/values of one infotext line, values unquoted. `WxH` values stay whole."""
    return {key: unquote(value) for key, value in _PARAM.findall(line)}


@dataclass(frozen=True)
class GenerationInfo:
    """What a WebUI-made image says about how it was made."""

    prompt: str = ""
    negative_prompt: str = ""
    #: every "Key: value" of the last line, values unquoted, sizes whole ("512x768")
    fields: dict[str, str] = field(default_factory=dict)

    def _number(self, key: str, kind: type) -> int | float | None:
        try:
            return kind(self.fields[key])
        except (KeyError, ValueError):
            return None

    @property
    def steps(self) -> int | None:
        return self._number("Steps", int)

    @property
    def seed(self) -> int | None:
        return self._number("Seed", int)

    @property
    def cfg_scale(self) -> float | None:
        return self._number("CFG scale", float)

    @property
    def sampler(self) -> str | None:
        return self.fields.get("Sampler")

    @property
    def size(self) -> tuple[int, int] | None:
        match = _SIZE.match(self.fields.get("Size", ""))
        return (int(match.group(1)), int(match.group(2))) if match else None


def parse_parameters(text: str) -> GenerationInfo:
    """Parse a WebUI "parameters" text. A text without a key/value line is all prompt."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    # The WebUI's rule: the last line holds the settings only if it has at least 3 of them.
    if len(_PARAM.findall(last)) >= 3:
        lines, fields = lines[:-1], parse_fields(last)
    else:
        fields = {}
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        line = line.strip()
        if line.startswith(_NEGATIVE) and not negative:
            negative.append(line[len(_NEGATIVE):].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    return GenerationInfo("\n".join(prompt), "\n".join(negative), fields)


def with_fields(text: str, fields: Mapping[str, object], *, replace_prefix: str = "Hires upscale ") -> str:
    """`text` with `fields` on its settings line (a new line if it has none).

    Earlier keys starting with `replace_prefix` are dropped first, so upscaling
    an image twice records the last run, not a mix of both.
    """
    lines = text.rstrip("\n").split("\n") if text.strip() else []
    if lines and len(_PARAM.findall(lines[-1])) >= 3:
        kept = {k: v for k, v in parse_fields(lines[-1]).items() if not k.startswith(replace_prefix)}
        lines[-1] = format_fields({**kept, **fields})
    else:
        lines.append(format_fields(fields))
    return "\n".join(lines)
