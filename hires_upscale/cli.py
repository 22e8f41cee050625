"""Command line for the parts that need no WebUI: upscale image files.

    python -m hires_upscale upscale IN [IN ...] [--model PATH|lanczos]
        [--scale 2 | --width W --height H] [--fit crop|fill|stretch]
        [--tile-size N] [--sharpen 0.3] [--precision auto|fp32] [--format png|same] -o OUTDIR [--overwrite]

Each input becomes OUTDIR/<name>.png (with --format same, a JPEG or WebP input
stays JPEG or WebP) with the input's generation info kept: its PNG text chunks,
or a JPEG's or WebP's EXIF record (the WebUI's "parameters" survive either way).
Outputs are written atomically and an existing file is never replaced without
--overwrite: a rerun skips what is done.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from . import __version__
from .batch import Skipped, run_files
from .errors import FieldError, HiresUpscaleError, ParamsError
from .folders import OutputClashError, image_files, plan_jobs
from .infotext import format_fields
from .params import HiresParams
from .pipeline import Pipeline, Result
from .upscaler import PRECISIONS, resolve_upscaler

#: PNG text chunk holding what this tool did (the WebUI's "parameters" are left as they were).
TEXT_KEY = "hires-upscale"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hires_upscale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upscale", help="upscale image files with a model or Lanczos")
    up.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files or folders of images")
    up.add_argument("-o", "--output-dir", type=Path, required=True, metavar="OUTDIR")
    up.add_argument("--model", default="lanczos", metavar="PATH|lanczos",
                    help="super-resolution model file spandrel reads (ESRGAN, SwinIR, HAT, DAT...: .pth, "
                    ".safetensors) or 'lanczos' (default)")
    up.add_argument("--scale", type=float, help="scale factor per side (default 2)")
    up.add_argument("--width", type=int, default=0, help="target width; with --height alone, from the aspect")
    up.add_argument("--height", type=int, default=0, help="target height; with --width alone, from the aspect")
    up.add_argument("--fit", choices=("crop", "fill", "stretch"), default="crop",
                    help="when width x height has another aspect (default crop)")
    up.add_argument("--tile-size", type=int, default=0, metavar="N", help="model tile size in pixels (default auto)")
    up.add_argument("--sharpen", type=float, default=0.0, metavar="S",
                    help="unsharp mask strength 0..1 on the result (default 0 = off; 0.3 is gentle)")
    up.add_argument("--precision", choices=PRECISIONS, default="auto",
                    help="auto: bf16/fp16 where the model and device support it; fp32: always full precision")
    up.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if present)")
    up.add_argument("--format", choices=("png", "same"), default="png",
                    help="png (default), or same: a JPEG or WebP input gives the same format back, its generation "
                    "info in EXIF as the WebUI writes it")
    up.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return parser


def _params(args: argparse.Namespace) -> HiresParams:
    values: dict[str, object] = {
        "enabled": True,
        "upscaler": "Lanczos" if args.model.lower() == "lanczos" else args.model,
        "denoise": 0.0,
        "fit": args.fit,
        "tile_size": args.tile_size,
        "sharpen": args.sharpen > 0,
        "sharpen_strength": args.sharpen if args.sharpen > 0 else 0.3,
    }
    if args.scale is not None and (args.width or args.height):
        raise ParamsError([FieldError("scale", args.scale, "either --scale or --width/--height, not both")])
    if args.width or args.height:
        values.update(resize_mode="size", width=args.width, height=args.height)
    else:
        values.update(resize_mode="scale", scale=2.0 if args.scale is None else args.scale)
    return HiresParams.from_mapping(values)


def _expand(inputs: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        files.extend(image_files(item) if item.is_dir() else [item])
    return files


def _engine_facts(upscaler: object, image: Image.Image) -> dict[str, object]:
    """How a model ran, for the output's record: its precision, device and tile size (none for Lanczos)."""
    if not hasattr(upscaler, "grid_for"):
        return {}
    return {"precision": str(upscaler.dtype).removeprefix("torch."), "device": str(upscaler.device),  # type: ignore[attr-defined]
            "tile": upscaler.grid_for(image.width, image.height).tile_size}  # type: ignore[attr-defined]


def upscale_command(args: argparse.Namespace) -> int:
    try:
        params = _params(args)
    except HiresUpscaleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        jobs = plan_jobs(_expand(args.inputs), args.output_dir, same_format=args.format == "same")
    except OutputClashError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        upscaler = resolve_upscaler(args.model, device=args.device, precision=args.precision,
                                    tile_size=args.tile_size)
    except HiresUpscaleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args.output_dir.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(lambda _name: upscaler, backend=None, snap_multiple=1)

    def upscale(image: Image.Image, source: Path) -> tuple[Result, dict[str, str]]:
        result = pipeline.run(image, params)
        return result, {TEXT_KEY: format_fields({
            "model": upscaler.name, "from": "x".join(map(str, image.size)),
            "to": "x".join(map(str, result.image.size)), "fit": params.fit,
            "sharpen": params.sharpen_strength if params.sharpen else 0, **_engine_facts(upscaler, image),
        })}

    failed = 0
    for outcome in run_files(jobs, upscale, existing="replace" if args.overwrite else "skip"):
        if isinstance(outcome, Skipped):
            if outcome.failed:
                failed += 1
                print(f"error: {outcome.source}: {outcome.reason}", file=sys.stderr)
            else:
                print(f"skip {outcome.source}: {outcome.reason} (--overwrite replaces it)")
            continue
        (w, h), (tw, th) = outcome.result.plan.source, outcome.result.image.size
        print(f"{outcome.source} {w}x{h} -> {outcome.output} {tw}x{th}")
        # What the file held that the output does not (frames, oversized text): said, not silent.
        for notice in outcome.result.notices:
            print(f"{notice.level}: {outcome.source}: {notice.message}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return upscale_command(args)
    except KeyboardInterrupt:
        print("interrupted: finished files are complete, a rerun skips them", file=sys.stderr)
        return 130
