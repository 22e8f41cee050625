"""README's pictures of a trained model on real photos: Lanczos, Real-ESRGAN's trained x4plus on our engine,
and the same with the gentle sharpen, at 2x and 4x, beside the original photo.

    .venv/bin/python tools/trained_pictures.py [--out docs]

A photo from scikit-image's wheel is cropped (the original), shrunk 4x (bicubic), and the small one is
upscaled back to 2x and 4x each way; every panel is shown at the 4x size (nearest-neighbour), so the
panels compare pixel for pixel. Writes docs/trained-2x.png and docs/trained-4x.png.

It also writes docs/precision-crop.png, what the precision gate keeps made visible: the same 4x upscale
by the trained x4plus in fp32 and in the reduced precision our engine kept on this machine, and their
difference amplified 16 times, with the PSNR and the largest difference printed on the picture.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

#: (photo, crop box): a face and fabric, a cat's fur
CROPS = (("astronaut", (160, 40, 352, 232)), ("chelsea", (140, 40, 332, 232)))


def panels(original: Image.Image, scale: int) -> dict[str, Image.Image]:
    import trained_models

    from hires_upscale.sharpen import sharpen
    from hires_upscale.upscaler import load_model

    small = original.resize((original.width // 4, original.height // 4), Image.Resampling.BICUBIC)
    size = (small.width * scale, small.height * scale)
    model = load_model(trained_models.converted("x4plus"), device="cpu", precision="auto")
    upscaled = model.upscale(small, size)
    shown = {
        f"input ({small.width}x{small.height})": small,
        f"Lanczos {scale}x": small.resize(size, Image.Resampling.LANCZOS),
        f"x4plus {scale}x (trained)": upscaled,
        f"x4plus {scale}x + sharpen 0.3": sharpen(upscaled, 0.3),
        "original photo": original,
    }
    return {label: picture.resize(original.size, Image.Resampling.NEAREST) for label, picture in shown.items()}


def strip(rows: list[dict[str, Image.Image]]) -> Image.Image:
    width, height = next(iter(rows[0].values())).size
    label = 20
    canvas = Image.new("RGB", (width * len(rows[0]), (height + label) * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for row_index, row in enumerate(rows):
        top = row_index * (height + label)
        for column, (text, picture) in enumerate(row.items()):
            canvas.paste(picture, (column * width, top + label))
            draw.text((column * width + 4, top + 3), text, fill="black")
    return canvas


def precision_crop(original: Image.Image) -> tuple[Image.Image, str]:
    import numpy as np
    import trained_models

    from hires_upscale.upscaler import load_model

    small = original.resize((original.width // 4, original.height // 4), Image.Resampling.BICUBIC)
    size = (small.width * 4, small.height * 4)
    path = trained_models.converted("x4plus")
    reduced = load_model(path, device="cpu", precision="auto")
    full = load_model(path, device="cpu", precision="fp32")
    kept = str(reduced.dtype).removeprefix("torch.")
    a = np.asarray(full.upscale(small, size), dtype=np.float64)
    b = np.asarray(reduced.upscale(small, size), dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    psnr = 10 * np.log10(255**2 / mse) if mse else float("inf")
    difference = Image.fromarray(np.clip(np.abs(a - b) * 16, 0, 255).astype(np.uint8))
    facts = f"{kept} vs fp32: {psnr:.1f} dB, largest difference {int(np.abs(a - b).max())} of 255"
    row = {"x4plus 4x, fp32": Image.fromarray(a.astype(np.uint8)), f"x4plus 4x, {kept} (kept)":
           Image.fromarray(b.astype(np.uint8)), "difference x16": difference}
    return strip([row]), facts


def main(argv: list[str] | None = None) -> int:
    from benchmarks.trained import photo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    for scale in (2, 4):
        rows = [panels(photo(name).crop(box), scale) for name, box in CROPS]
        strip(rows).save(args.out / f"trained-{scale}x.png")
        print(f"wrote {args.out / f'trained-{scale}x.png'}")
    picture, facts = precision_crop(photo(CROPS[0][0]).crop(CROPS[0][1]))
    canvas = Image.new("RGB", (picture.width, picture.height + 20), "white")
    canvas.paste(picture, (0, 0))
    ImageDraw.Draw(canvas).text((4, picture.height + 4), facts, fill="black")
    canvas.save(args.out / "precision-crop.png")
    print(f"wrote {args.out / 'precision-crop.png'}: {facts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
