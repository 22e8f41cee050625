"""One gentle unsharp mask, for the final image only.

The pipeline calls this once, after the second pass; sharpening before the
second pass would be redrawn, and sharpening twice compounds halos.
"""

from __future__ import annotations

from PIL import Image, ImageFilter

#: Blur radius of the mask in pixels: fine detail at hires sizes, no halos.
RADIUS = 1.5
#: Differences below this (0-255) are left alone, so flat areas and noise stay flat.
THRESHOLD = 2


def sharpen(image: Image.Image, strength: float) -> Image.Image:
    """Unsharp mask of `strength` (0.3 = add 30% of the detail back); alpha untouched."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"sharpen strength {strength} is outside 0..1")
    if strength == 0:
        return image.copy()
    mask = ImageFilter.UnsharpMask(radius=RADIUS, percent=round(strength * 100), threshold=THRESHOLD)
    if image.mode in ("RGB", "L"):
        return image.filter(mask)
    if image.mode in ("RGBA", "LA"):
        base_mode = image.mode[:-1]
        sharpened = image.convert(base_mode).filter(mask).convert(image.mode)
        sharpened.putalpha(image.getchannel("A"))
        return sharpened
    return image.convert("RGB").filter(mask)
