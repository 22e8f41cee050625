"""GPU figures in one call: the upscaler engine against the built-in algorithm, and the tiled second pass.

    python -m benchmarks.gpu [--quick] [--device cuda] [--out docs]
    bash benchmarks/gpu.sh [same arguments]     # installs spandrel/diffusers from ./wheels first if missing

Engine: a full-size RRDB ESRGAN 4x (random weights: speed does not depend on them) at 512->2048,
1024->4096 and 2048->8192. Ours runs warm (its cache is the point), the built-in algorithm
(benchmarks/builtin.py: reload, 192 px tiles one at a time, fp16 on CUDA as the WebUI does without
--no-half) runs as it does for every image. Per case: median time, TFLOP/s (the model's FLOPs per
input pixel, counted by torch, times the input's pixels, over the time), CUDA's peak allocated
memory, and the ratio. An out-of-memory error is a row saying so, not a crash.

Low VRAM: `benchmarks.lowvram` at 2048x2048 (SD1.5 VAE and UNet, fp16), full frame vs tiled.

Writes the markdown table to the `gpu` section of OUT/benchmarks.md (and OUT/benchmarks-gpu.json)
and prints it with the targets of issue #14 checked. `--quick` is a smoke run at 64 px on any device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.report import publish  # noqa: E402

CASES = ((512, 2048), (1024, 4096), (2048, 8192))
QUICK_CASES = ((64, 256),)
#: What issue #14 asks of an H100/H200.
TARGETS = {"ratio_at_1024": 6.0, "tflops": 150.0, "tiled_peak_share": 0.25, "tiled_time_ratio": 1.5}


def flops_per_pixel(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> float:
    """The model's FLOPs per input pixel, counted by torch on a 64x64 input (convolutions scale with pixels)."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = torch.rand(1, 3, 64, 64, device=device, dtype=dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(probe)
    return counter.get_total_flops() / (64 * 64)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(run, device: torch.device, repeat: int) -> dict:
    """Median seconds of `run()` and the peak memory it allocated (CUDA), or the out-of-memory error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    try:
        for _ in range(repeat):
            _synchronize(device)
            start = time.perf_counter()
            run()
            _synchronize(device)
            times.append(time.perf_counter() - start)
    except torch.cuda.OutOfMemoryError as error:
        return {"error": f"out of memory: {str(error).splitlines()[0]}"}
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"seconds": statistics.median(times), "peak_gib": peak}


def engine_rows(device: torch.device, cases: tuple[tuple[int, int], ...], repeat: int) -> list[dict]:
    import models
    from pictures import noise_image

    from benchmarks.builtin import builtin_upscale
    from hires_upscale.upscaler import load_model

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = models.save_pth(models.rrdb(4), Path(folder) / "rrdb-4x.pth")
        ours = load_model(path, device=device, precision="auto")
        per_pixel = flops_per_pixel(ours.descriptor.model, device, ours.dtype)
        for source, target in cases:
            image = noise_image(source, source, seed=7)
            size = (target, target)
            ours.upscale(image, size)  # warm: kernels chosen, model cached
            mine = _measure(lambda image=image, size=size: ours.upscale(image, size), device, repeat)
            builtin = _measure(lambda image=image, size=size: builtin_upscale(path, image, size, device=str(device),
                                                                               half=device.type == "cuda"),
                               device, 1)
            row = {"case": f"{source}->{target}", "ours": mine, "builtin": builtin,
                   "dtype": str(ours.dtype).removeprefix("torch."), "tflop_per_image": per_pixel * source**2 / 1e12}
            if "seconds" in mine:
                row["tflops"] = row["tflop_per_image"] / mine["seconds"]
            if "seconds" in mine and "seconds" in builtin:
                row["ratio"] = builtin["seconds"] / mine["seconds"]
            rows.append(row)
    return rows


def lowvram_rows(device: str, size: int, out: Path) -> dict:
    """benchmarks.lowvram at `size`, one UNet step, in its own processes; its JSON report."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.lowvram", "--sizes", str(size), "--steps", "1",
                           "--device", device, "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads((out / "benchmarks-lowvram.json").read_text())


def _cell(measured: dict, key: str, fmt: str) -> str:
    if "error" in measured:
        return "OOM" if "out of memory" in measured["error"] else "failed"
    value = measured.get(key)
    return "n/a" if value is None else format(value, fmt)


def render(report: dict, argv: list[str]) -> str:
    lines = [f"GPU figures on {report['gpu']} (`python -m benchmarks.gpu {' '.join(argv)}`), torch "
             f"{report['torch']}: RRDB ESRGAN 4x, ours warm vs the built-in algorithm", "",
             "| case | ours (s) | ours TFLOP/s | ours peak (GiB) | built-in (s) | built-in peak (GiB) | ratio |",
             "|---|---|---|---|---|---|---|"]
    for row in report["engine"]:
        lines.append(f"| {row['case']} ({row['dtype']}) | {_cell(row['ours'], 'seconds', '.3f')} | "
                     f"{format(row['tflops'], '.0f') if 'tflops' in row else 'n/a'} | "
                     f"{_cell(row['ours'], 'peak_gib', '.2f')} | {_cell(row['builtin'], 'seconds', '.3f')} | "
                     f"{_cell(row['builtin'], 'peak_gib', '.2f')} | "
                     f"{format(row['ratio'], '.1f') + 'x' if 'ratio' in row else 'n/a'} |")
    low = report.get("lowvram") or {}
    if "error" in low:
        lines += ["", f"Low VRAM: benchmarks.lowvram failed: {low['error'][-300:]}"]
    elif low:
        lines += ["", "Low VRAM (`benchmarks.lowvram --steps 1`, SD1.5 VAE + 1 UNet step, fp16): tiled vs full frame",
                  "", "| size | full peak (MB) | tiled peak (MB) | peak ratio | time ratio | decode PSNR (dB) |",
                  "|---|---|---|---|---|---|"]
        for row in low.get("rows", []):
            lines.append(f"| {row['size']} | {row['full']['peak_mb']:.0f} | {row['tiled']['peak_mb']:.0f} | "
                         f"{row['peak_memory_ratio']:.2f} | {row['second_pass_time_ratio']:.2f} | "
                         f"{row['decode_psnr_db']:.1f} |")
    lines += ["", "Targets (issue #14): " + "; ".join(f"{name} {'met' if ok else 'NOT met'}"
                                                     for name, ok in report["targets"].items())]
    return "\n".join(lines)


def check_targets(report: dict) -> dict[str, bool]:
    engine = {row["case"]: row for row in report["engine"]}
    checks = {}
    if "1024->4096" in engine:
        row = engine["1024->4096"]
        checks["ratio >= 6x at 1024->4096"] = row.get("ratio", 0) >= TARGETS["ratio_at_1024"]
        checks["ours >= 150 TFLOP/s at 1024->4096"] = row.get("tflops", 0) >= TARGETS["tflops"]
    if "2048->8192" in engine:
        checks["no OOM at 2048->8192"] = "error" not in engine["2048->8192"]["ours"]
    for row in (report.get("lowvram") or {}).get("rows", []):
        checks[f"tiled peak <= 25% of full frame at {row['size']}"] = (
            row["peak_memory_ratio"] <= TARGETS["tiled_peak_share"])
        checks[f"tiled time <= 1.5x at {row['size']}"] = row["second_pass_time_ratio"] <= TARGETS["tiled_time_ratio"]
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="64 -> 256 only, no low-VRAM run: a smoke test")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    report = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} (no GPU)",
              "torch": torch.__version__,
              "engine": engine_rows(device, QUICK_CASES if args.quick else CASES, 1 if args.quick else args.repeat)}
    if not args.quick:
        with tempfile.TemporaryDirectory() as folder:
            report["lowvram"] = lowvram_rows(args.device, 2048, Path(folder))
    report["targets"] = check_targets(report)
    publish(args.out, "gpu", report, render(report, list(argv or [])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
