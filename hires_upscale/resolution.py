"""Target sizes: presets per model family, snapping, aspect handling, limits.

Sizes are (width, height) tuples of ints throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from .errors import FieldError, ParamsError, TargetTooLargeError

Size = tuple[int, int]

#: Above this many output pixels we refuse to plan (about 8192x8192).
DEFAULT_MAX_PIXELS = 8192 * 8192
#: The second pass works in latents of 1/8 the size; 64 is what the models like best.
SNAP_MULTIPLE = 64


@dataclass(frozen=True)
class ModelFamily:
    """What a checkpoint family was trained at, what one pass handles comfortably, and how its
    second pass behaves at a given denoise."""

    name: str
    #: training resolution per side
    base: int
    #: above this many pixels a full-frame second pass gets slow and memory-hungry (DiTs: also stripes and grids)
    comfortable_pixels: int
    #: "unet" or "dit": a transformer attends across the whole picture, so its pass is never tiled
    architecture: str = "unet"
    #: a rectified-flow model (Flux, SD3...): the same denoise starts from a noisier point of its schedule
    flow: bool = False
    #: the denoise range that refines detail and keeps the composition, and the point past which the
    #: pass redraws the picture (flow models: from the hosts' schedules, see docs/flux-and-neo-facts.md §5)
    denoise_range: tuple[float, float] = (0.2, 0.45)
    max_denoise: float = 0.5
    #: largest UNet tile of a tiled pass, in pixels: about the size it was trained at (SD1.5 takes 1.5x of
    #: its 512 in img2img at a low denoise; SDXL below its 1024 loses detail)
    tile: int = 768
    #: False: a family this extension does not know (the host named an engine outside this table)
    known: bool = True

    @property
    def tileable(self) -> bool:
        return self.known and self.architecture == "unet"

    @property
    def denoise_text(self) -> str:
        """The denoise range as the advice writes it ("0.2-0.45")."""
        return "-".join(f"{d:g}" for d in self.denoise_range)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "base": self.base, "comfortable_pixels": self.comfortable_pixels,
                "architecture": self.architecture, "flow": self.flow, "max_denoise": self.max_denoise,
                "denoise_range": self.denoise_text, "denoise_high": self.denoise_range[1],
                "tileable": self.tileable, "known": self.known}


def _dit(name: str, base: int, *, shifted: bool = False, comfortable: int = 2048 * 2048) -> ModelFamily:
    # A strongly shifted schedule (Flux.2, Z-Image, Lumina 2, Wan: shift 6-9) starts a pass at denoise 0.2
    # about as noisy as Flux.1 at 0.35 and SD1.5 at 0.5, so its useful range sits lower.
    low, high, most = (0.1, 0.3, 0.4) if shifted else (0.2, 0.5, 0.65)
    return ModelFamily(name, base, comfortable, "dit", True, (low, high), most)


FAMILIES: dict[str, ModelFamily] = {
    "sd15": ModelFamily("sd15", 512, 1536 * 1536),
    "sd2": ModelFamily("sd2", 768, 2048 * 2048),
    "sdxl": ModelFamily("sdxl", 1024, 2560 * 2560, tile=1024),
    # Transformers, all rectified flow. Flux.1 and Chroma were trained up to about 2 MP and show stripes
    # and grids well above it (Forge #1712, black-forest-labs/flux #406).
    "sd3": _dit("sd3", 1024),
    "flux": _dit("flux", 1024),
    "chroma": _dit("chroma", 1024),
    # Forge Neo's
    "flux2": _dit("flux2", 1024, shifted=True),
    "qwen": _dit("qwen", 1328, comfortable=2688 * 2688),
    "lumina2": _dit("lumina2", 1024, shifted=True),
    "zimage": _dit("zimage", 1024, shifted=True),
    "wan": _dit("wan", 832, shifted=True, comfortable=2048 * 1152),
    "anima": _dit("anima", 1024),
}

#: The family of a model the host names no family for: planned like a 1 MP transformer, never tiled.
UNKNOWN = "unknown"
_UNKNOWN_FAMILY = ModelFamily(UNKNOWN, 1024, 2048 * 2048, "dit", False, (0.2, 0.45), 0.5, known=False)


def family(name: str) -> ModelFamily:
    if name == UNKNOWN:
        return _UNKNOWN_FAMILY
    try:
        return FAMILIES[name]
    except KeyError:
        raise ParamsError([FieldError("family", name, "one of " + ", ".join([*FAMILIES, UNKNOWN]))]) from None


@dataclass(frozen=True)
class Preset:
    """A named target: either a scale factor or a fixed size."""

    name: str
    scale: float | None = None
    width: int | None = None
    height: int | None = None

    @property
    def label(self) -> str:
        return self.name if self.scale else f"{self.name} ({self.width}x{self.height})"

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "label": self.label, "scale": self.scale,
                "width": self.width, "height": self.height}


_SCALE_PRESETS = tuple(Preset(f"{s:g}x", scale=s) for s in (1.5, 2.0, 2.5, 3.0, 4.0))


# Twice the usual first-pass sizes of each family: what people finish at. SDXL and the 1 MP transformers
# (Flux, Chroma...) share theirs: 2x of a 1 MP first pass is about 4 MP, the most Flux holds together.
_SQUARE_2048 = (("Square", 2048, 2048), ("Portrait 2:3", 1664, 2432), ("Landscape 3:2", 2432, 1664),
                ("Portrait 9:16", 1536, 2688), ("Landscape 16:9", 2688, 1536))
_SIZE_PRESETS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "sd15": (("Square", 1024, 1024), ("Portrait 2:3", 1024, 1536), ("Landscape 3:2", 1536, 1024),
             ("Portrait 9:16", 1152, 2048), ("Landscape 16:9", 2048, 1152)),
    "sd2": (("Square", 1536, 1536), ("Portrait 2:3", 1280, 1920), ("Landscape 3:2", 1920, 1280),
            ("Portrait 9:16", 1152, 2048), ("Landscape 16:9", 2048, 1152)),
    "sdxl": _SQUARE_2048,
    "sd3": _SQUARE_2048,
    "flux": _SQUARE_2048,
    "chroma": _SQUARE_2048,
    "flux2": _SQUARE_2048,
    "qwen": (("Square", 2624, 2624), ("Portrait 2:3", 2112, 3200), ("Landscape 3:2", 3200, 2112),
             ("Portrait 9:16", 1856, 3328), ("Landscape 16:9", 3328, 1856)),
    "lumina2": _SQUARE_2048,
    "zimage": _SQUARE_2048,
    # video models making stills: 480p/720p first passes
    "wan": (("720p 16:9", 1280, 704), ("1080p 16:9", 1920, 1088), ("720p 9:16", 704, 1280),
            ("1080p 9:16", 1088, 1920), ("Square", 1280, 1280)),
    "anima": _SQUARE_2048,
    UNKNOWN: (),  # scale factors only: nothing is known of its sizes
}

PRESETS: dict[str, tuple[Preset, ...]] = {
    name: _SCALE_PRESETS + tuple(Preset(label, width=w, height=h) for label, w, h in sizes)
    for name, sizes in _SIZE_PRESETS.items()
}


def presets_for(family_name: str) -> tuple[Preset, ...]:
    return PRESETS[family(family_name).name]


def find_preset(family_name: str, name: str) -> Preset:
    for preset in presets_for(family_name):
        if name in (preset.name, preset.label):
            return preset
    allowed = ", ".join(repr(p.name) for p in presets_for(family_name))
    raise ParamsError([FieldError("preset", name, f"one of {allowed}")])


def snap(value: float, multiple: int = SNAP_MULTIPLE) -> int:
    """The nearest multiple of `multiple`, never below one multiple."""
    if multiple <= 1:
        return max(1, round(value))
    return max(multiple, int(math.floor(value / multiple + 0.5)) * multiple)


@dataclass(frozen=True)
class ResizePlan:
    """How a source image becomes the target: upscale to `upscaled`, then fit."""

    source: Size
    #: what was asked before snapping
    requested: Size
    #: the final size
    target: Size
    #: crop, fill or stretch
    fit: str
    #: the size the upscaler must produce before the fit step
    upscaled: Size

    @property
    def snapped(self) -> bool:
        return self.requested != self.target

    @property
    def scale(self) -> float:
        """Largest per-side factor from source to target."""
        return max(self.target[0] / self.source[0], self.target[1] / self.source[1])


def requested_size(
    source: Size, *, mode: str, scale: float, width: int, height: int, preset: str, family_name: str
) -> Size:
    """The size asked for, before snapping."""
    sw, sh = source
    if mode == "preset":
        chosen = find_preset(family_name, preset)
        if chosen.scale:
            mode, scale = "scale", chosen.scale
        else:
            mode, width, height = "size", chosen.width or 0, chosen.height or 0
    if mode == "scale":
        return max(1, round(sw * scale)), max(1, round(sh * scale))
    if width and height:
        return width, height
    if width:
        return width, max(1, round(width * sh / sw))
    if height:
        return max(1, round(height * sw / sh)), height
    raise ParamsError([FieldError("width", 0, "a width or a height above 0 in resize mode 'size'")])


def plan_resize(
    source: Size,
    *,
    mode: str = "scale",
    scale: float = 2.0,
    width: int = 0,
    height: int = 0,
    preset: str = "",
    fit: str = "crop",
    family_name: str = "sd15",
    multiple: int = SNAP_MULTIPLE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ResizePlan:
    """Plan the sizes of one run. `multiple=1` keeps the requested size exactly."""
    if source[0] < 1 or source[1] < 1:
        raise ParamsError([FieldError("image", f"{source[0]}x{source[1]}", "an image of at least 1x1")])
    requested = requested_size(
        source, mode=mode, scale=scale, width=width, height=height, preset=preset, family_name=family_name
    )
    target = (snap(requested[0], multiple), snap(requested[1], multiple))
    if target[0] * target[1] > max_pixels:
        raise TargetTooLargeError(target[0], target[1], max_pixels)
    return ResizePlan(source, requested, target, fit, _upscaled_size(source, target, fit))


def _upscaled_size(source: Size, target: Size, fit: str) -> Size:
    sw, sh = source
    tw, th = target
    if fit == "stretch" or sw * th == sh * tw:
        return target
    factor = max(tw / sw, th / sh) if fit == "crop" else min(tw / sw, th / sh)
    size = (round(sw * factor), round(sh * factor))
    if fit == "crop":  # must cover the target on both sides
        return max(size[0], tw), max(size[1], th)
    return min(size[0], tw), min(size[1], th)


def apply_fit(image: Image.Image, plan: ResizePlan) -> Image.Image:
    """Turn an image of `plan.upscaled` size into one of `plan.target` size."""
    if image.size != plan.upscaled:
        image = image.resize(plan.upscaled, Image.Resampling.LANCZOS)
    tw, th = plan.target
    uw, uh = plan.upscaled
    if (uw, uh) == (tw, th):
        return image
    if plan.fit == "crop":
        left, top = (uw - tw) // 2, (uh - th) // 2
        return image.crop((left, top, left + tw, top + th))
    # fill: centre the image and stretch its edge rows or columns into the empty
    # bands, like the WebUI's "Resize and fill". One side already matches.
    canvas = Image.new(image.mode, (tw, th))
    left, top = (tw - uw) // 2, (th - uh) // 2
    right, bottom = tw - left - uw, th - top - uh
    bands = (
        ((0, 0, 1, uh), (left, uh), (0, top)),
        ((uw - 1, 0, uw, uh), (right, uh), (left + uw, top)),
        ((0, 0, uw, 1), (uw, top), (left, 0)),
        ((0, uh - 1, uw, uh), (uw, bottom), (left, top + uh)),
    )
    for edge, band_size, position in bands:
        if band_size[0] > 0 and band_size[1] > 0:
            canvas.paste(image.crop(edge).resize(band_size), position)
    canvas.paste(image, (left, top))
    return canvas
