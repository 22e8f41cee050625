"""What feeding a trained model BGR (as the WebUI does) instead of RGB (as it was trained, and as our
engine does) costs, on real photos.

    python -m benchmarks.channel_order [--size 256] [--out docs]

Each of scikit-image's photos is cropped to `--size` (the truth), degraded the way Real-ESRGAN's
training data was (a Gaussian blur, a bicubic 4x downscale, mild noise, JPEG at quality 75; one round
of its degradations), upscaled 4x by each trained model in fp32 on the whole frame, fed RGB and fed
BGR, and compared with the truth: PSNR and SSIM (scikit-image's, on the luma). Bicubic is there for
scale (PSNR favours its blur over a GAN's invented detail).
Results: printed, docs/benchmarks.md (between markers), docs/benchmarks-channel-order.json, and a
picture of one crop (docs/channel-order.png).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.report import publish  # noqa: E402
from benchmarks.trained import photo, reference  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "motorcycle_left")
MODELS = ("x4plus", "x4plus-anime", "animevideov3")


def degraded(truth: Image.Image, seed: int = 0) -> Image.Image:
    """One round of Real-ESRGAN's training degradations: blur, bicubic 4x down, noise, JPEG."""
    small = truth.filter(ImageFilter.GaussianBlur(1.2)).resize((truth.width // 4, truth.height // 4),
                                                               Image.Resampling.BICUBIC)
    noise = np.random.default_rng(seed).normal(0, 2.0, (small.height, small.width, 3))
    small = Image.fromarray(np.clip(np.asarray(small, dtype=np.float64) + noise, 0, 255).round().astype(np.uint8))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=75)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def scores(truth: Image.Image, made: Image.Image) -> tuple[float, float]:
    from skimage.metrics import structural_similarity

    a, b = np.asarray(truth, dtype=np.float64), np.asarray(made, dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    luma = (np.asarray(truth.convert("L"), dtype=np.float64), np.asarray(made.convert("L"), dtype=np.float64))
    return 10 * np.log10(255.0**2 / mse), float(structural_similarity(*luma, data_range=255))


def crop_of(name: str, size: int) -> Image.Image:
    picture = photo(name)
    left, top = (picture.width - size) // 2, (picture.height - size) // 2
    return picture.crop((left, top, left + size, top + size))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.channel_order", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    rows = []
    shown: dict[str, Image.Image] = {}
    for name in PHOTOS:
        truth = crop_of(name, args.size)
        low = degraded(truth)
        bicubic = low.resize(truth.size, Image.Resampling.BICUBIC)
        row = {"photo": name, "bicubic": scores(truth, bicubic)}
        for key in MODELS:
            rgb, bgr = reference(key, low), reference(key, low, bgr=True)
            row[key] = {"rgb": scores(truth, rgb), "bgr": scores(truth, bgr)}
            if name == PHOTOS[0] and key == "x4plus":
                shown = {"truth": truth, "bicubic": bicubic, "x4plus, RGB in (ours)": rgb,
                         "x4plus, BGR in (the WebUI)": bgr}
            print(f"  {name} {key}: RGB {row[key]['rgb'][0]:.2f} dB, BGR {row[key]['bgr'][0]:.2f} dB", flush=True)
        rows.append(row)
    report = {"command": "python -m benchmarks.channel_order" + (f" --size {args.size}" if args.size != 256 else ""),
              "date": time.strftime("%Y-%m-%d"), "size": args.size, "rows": rows}
    picture = side_by_side(shown)
    picture.save(args.out / "channel-order.png")
    publish(args.out, "channel-order", report, markdown(report))
    return 0


def side_by_side(pictures: dict[str, Image.Image]) -> Image.Image:
    """The crops side by side, labelled."""
    width, height = next(iter(pictures.values())).size
    canvas = Image.new("RGB", (width * len(pictures), height + 22), "white")
    draw = ImageDraw.Draw(canvas)
    for column, (label, picture) in enumerate(pictures.items()):
        canvas.paste(picture, (column * width, 22))
        draw.text((column * width + 4, 4), label, fill="black")
    return canvas


def markdown(report: dict) -> str:
    lines = [
        "## Channel order: a trained model fed RGB (as trained, and as ours) or BGR (as the WebUI)",
        "",
        f"`{report['command']}` ({report['date']}): {report['size']}x{report['size']} crops of scikit-image's "
        "photos, degraded as Real-ESRGAN's training data (blur, bicubic 4x down, noise, JPEG 75), upscaled 4x "
        "by each trained model in fp32 on the whole frame; PSNR (RGB) and SSIM (luma) against the crop. "
        "Bicubic is there for scale: PSNR favours its blur over a GAN's invented detail, so it often scores "
        "higher; what this table decides is RGB against BGR for the same model.",
        "",
        "| photo | bicubic | " + " | ".join(f"{key} RGB | {key} BGR" for key in MODELS) + " |",
        "|---|---|" + "---|---|" * len(MODELS),
    ]

    def cell(score: tuple[float, float]) -> str:
        return f"{score[0]:.2f} dB / {score[1]:.3f}"

    for row in report["rows"]:
        lines.append(f"| {row['photo']} | {cell(row['bicubic'])} | "
                     + " | ".join(f"{cell(row[key]['rgb'])} | {cell(row[key]['bgr'])}" for key in MODELS) + " |")
    mean = {key: (np.mean([r[key]["rgb"][0] for r in report["rows"]]), np.mean([r[key]["bgr"][0] for r in
                                                                                 report["rows"]]))
            for key in MODELS}
    lines += ["", "Mean PSNR, RGB in vs BGR in: " + "; ".join(f"{key} {rgb:.2f} vs {bgr:.2f} dB"
                                                                for key, (rgb, bgr) in mean.items()) + ".",
              "", "![x4plus fed RGB and BGR on a degraded crop](channel-order.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
