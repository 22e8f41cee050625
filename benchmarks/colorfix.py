"""How well each color fix gives back a picture's colours and keeps a pass's detail (quality, not time).

    python -m benchmarks.colorfix [--size 512] [--out docs] [--picture docs/color-fix.png]

Two cases a drifting second pass gives: the whole picture with a warm cast, 20% of its contrast lost
and fresh fine detail; and a tiled pass whose left half came out warmer than its right. For each
mode it prints the coarse-band PSNR against the picture (bands above about 64 px: the colours) and
the fine-band correlation with the drifted copy (bands below about 16 px: the pass's detail). The
bands are measured with scipy's Gaussian filter, not with the fix's own wavelet, so the measure is
no copy of what it grades.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from hires_upscale.colorfix import color_fix
from hires_upscale.params import COLOR_FIX_MODES

from .report import publish

#: Gaussian sigmas (px) of the measured bands: what is left after sigma 16 is coarser than about 64 px
#: (the colours); what a sigma of 4 takes away is finer than about 16 px (the detail, new shapes included).
COARSE_SIGMA, FINE_SIGMA = 16.0, 4.0


def picture(width: int, height: int, seed: int = 3) -> Image.Image:
    """Smooth colour fields and mid-scale shapes, away from black and white (a fix that clips would
    otherwise look better than it is)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / 255.0
    fields = np.stack([0.5 + 0.3 * np.sin(3 * x + 1) * np.cos(2 * y), 0.45 + 0.25 * np.cos(4 * y + x),
                       0.4 + 0.2 * np.sin(5 * x * y + 2)], axis=-1)
    blobs = sum(0.15 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.003) for cx, cy in rng.uniform(0.1, 0.9, (12, 2)))
    pixels = np.clip(fields + blobs[..., None] * np.array([1.0, 0.6, 0.3]), 0.05, 0.95)
    return Image.fromarray((pixels * 255).round().astype(np.uint8), "RGB")


def drifted_copy(image: Image.Image, seed: int = 5) -> Image.Image:
    """`image` as a drifting second pass gives it back: a warm cast (+6% red, -5% blue), 20% of its
    contrast lost, and fresh detail: noise of 4% standard deviation and small new shapes (bumps about
    7 px across, of up to 10% in random colours: what a pass invents, and a fix must keep)."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(image, dtype=np.float64) / 255.0
    height, width = pixels.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    shapes = np.zeros_like(pixels)
    for cy, cx in rng.uniform(0, 1, (height * width // 400, 2)) * (height, width):
        shapes += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 18.0)[..., None] * rng.uniform(-0.1, 0.1, 3)
    drifted = ((pixels - 0.5) * 0.8 + 0.5 + np.array([0.06, 0.0, -0.05]) + shapes
               + rng.normal(0, 0.04, pixels.shape))
    return Image.fromarray((np.clip(drifted, 0, 1) * 255).round().astype(np.uint8), "RGB")


def half_warmer(image: Image.Image) -> Image.Image:
    """`image` with its left half's red lifted by 30 levels: tiles of a tiled pass a shade apart."""
    pixels = np.asarray(image, dtype=np.int16).copy()
    pixels[:, : image.width // 2, 0] += 30
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _low(image: Image.Image, sigma: float) -> np.ndarray:
    """The image's bands coarser than `sigma` (a Gaussian per channel, edges mirrored), in 0..1."""
    pixels = np.asarray(image, dtype=np.float64) / 255.0
    return gaussian_filter(pixels, sigma=(sigma, sigma, 0), mode="reflect")


def coarse_psnr(image: Image.Image, reference: Image.Image) -> float:
    """PSNR (dB) of the two images' coarse bands: how close the colours are."""
    a, b = _low(image, COARSE_SIGMA), _low(reference, COARSE_SIGMA)
    return float(10 * np.log10(1 / np.mean((a - b) ** 2)))


def fine_correlation(image: Image.Image, reference: Image.Image) -> float:
    """Correlation of the two images' fine bands: how much of the detail is the same."""
    a, b = ((np.asarray(i, dtype=np.float64) / 255.0 - _low(i, FINE_SIGMA)).ravel() for i in (image, reference))
    return float(np.corrcoef(a, b)[0, 1])


def measure(size: int) -> dict:
    original = picture(size, size)
    cases = {"cast, contrast and detail": drifted_copy(original), "left half warmer (tiles)": half_warmer(original)}
    rows = []
    for case, copy in cases.items():
        for mode in COLOR_FIX_MODES:
            fixed = color_fix(copy, original, mode)
            rows.append({"case": case, "mode": mode, "coarse_psnr_db": round(coarse_psnr(fixed, original), 2),
                         "fine_correlation": round(fine_correlation(fixed, copy), 4)})
    return {"size": size, "rows": rows}


def render(report: dict, argv: list[str]) -> str:
    lines = [f"Color fix at {report['size']}x{report['size']} (`python -m benchmarks.colorfix {' '.join(argv)}`"
             "): coarse bands vs the picture (higher: its colours), fine bands vs the drifted copy (1: its detail)",
             "", "| case | color fix | coarse-band PSNR (dB) | fine-band correlation |", "|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['mode']} | {r['coarse_psnr_db']} | {r['fine_correlation']} |"
              for r in report["rows"]]
    return "\n".join(lines)


def before_after(size: int, path: Path) -> None:
    """The picture, its drifted copy, and the copy after each fix, side by side, with labels."""
    from PIL import ImageDraw

    original = picture(size, size)
    copy = drifted_copy(original)
    panels = [("went into the pass", original), ("the pass (drifted)", copy),
              ("wavelet", color_fix(copy, original, "wavelet")), ("adain", color_fix(copy, original, "adain"))]
    sheet = Image.new("RGB", (size * len(panels), size + 24), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (label, image) in enumerate(panels):
        sheet.paste(image, (index * size, 24))
        draw.text((index * size + 6, 6), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--picture", type=Path, help="also write the before/after sheet here")
    args = parser.parse_args(argv)
    report = measure(args.size)
    publish(args.out, "colorfix", report, render(report, list(argv or [])))
    if args.picture:
        before_after(args.size // 2, args.picture)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
