"""Our upscaler engine against the WebUI's own path for the same file, measured in the same run.

    python -m benchmarks.upscaler [--repeat 3] [--threads 1] [--quick] [--cases NAME,...]

Every variant runs in a process of its own (so peak memory is its own), on the
same model file and the same picture. Times are medians of `--repeat` runs;
ours is measured warm (its model cache is the point), the built-in reloads the
model for every image because that is what it does. Quality is the PSNR of the
final image against our engine in fp32 on the whole frame with no tiles.
There is a case per spandrel family (RRDB ESRGAN, Real-ESRGAN compact, SwinIR,
HAT, DAT), each model at a size people run. The ESRGAN-path cases also run
the built-in algorithm rewritten here (benchmarks/builtin.py); where an A1111
checkout is (SD_WEBUI_ROOT, default ~/stable-diffusion-webui), every case runs
the WebUI's own upscaler for the file, from the folder the WebUI scans for its
family, in-process in the WebUI's venv.
Results: printed, and written to docs/benchmarks.md (between markers) and
docs/benchmarks-upscaler.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.report import publish  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # a key of MODELS
    source: int
    target: int
    note: str
    #: the WebUI folder (and upscaler) for the family; the ESRGAN path also has the built-in rewrite
    folder: str = "ESRGAN"


#: Random-weight models at the sizes people run: 4x-UltraSharp's RRDB, realesr-general's compact, and
#: the "M" sizes of the transformers (180 features, 6 groups of 6 blocks).
MODELS = {
    "rrdb": lambda m: m.rrdb(4),
    "compact": lambda m: m.compact(4, features=64, convs=32),
    "swinir": lambda m: m.swinir(4, dim=180, depths=6, blocks=6),
    "hat": lambda m: m.hat(4, dim=180, depths=6, blocks=6),
    "dat": lambda m: m.dat(4, dim=180, depths=6, blocks=6),
}
CASES = (
    Case("rrdb-256-to-2x", "rrdb", 256, 512, "RRDB ESRGAN 4x, 256x256 into a 2x target"),
    Case("rrdb-256-to-4x", "rrdb", 256, 1024, "RRDB ESRGAN 4x, 256x256 into a 4x target"),
    Case("compact-256-to-2x", "compact", 256, 512, "SRVGG compact 4x (64 features, 32 convs), 256x256 into 2x"),
    Case("swinir-64-to-2x", "swinir", 64, 128, "SwinIR-M 4x, 64x64 into 2x", folder="SwinIR"),
    Case("hat-64-to-2x", "hat", 64, 128, "HAT-M 4x, 64x64 into 2x", folder="HAT"),
    Case("dat-64-to-2x", "dat", 64, 128, "DAT 4x (180 features, 6x6 blocks), 64x64 into 2x", folder="DAT"),
)


def variants(case: Case) -> tuple[str, ...]:
    builtin = ("builtin",) if case.folder == "ESRGAN" else ()
    return ("reference", *builtin, "ours", "ours-fp32")


def make_model(kind: str, folder: Path) -> Path:
    import models

    path = folder / f"{kind}.pth"
    if not path.exists():
        models.save_pth(MODELS[kind](models), path)
    return path


def picture(size: int) -> Image.Image:
    from pictures import noise_image

    return noise_image(size, size, seed=7)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- workers (one process per variant) ---------------------------------------------------

def worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    image = Image.open(spec["input"]).convert("RGB")
    size = (spec["target"], spec["target"])
    model_path = Path(spec["model"])
    variant = spec["variant"]
    if variant == "builtin":
        import spandrel  # noqa: F401 - imported before timing, as the WebUI has it loaded already

        from benchmarks.builtin import builtin_upscale

        def run() -> Image.Image:
            return builtin_upscale(model_path, image, size)
        warmup = False
        facts = {"dtype": "float32", "tile": 192}
    else:
        from hires_upscale.upscaler import load_model

        upscaler = load_model(model_path, device="cpu", precision="auto" if variant == "ours" else "fp32",
                              tile_size=spec["source"] if variant == "reference" else 0)

        def run() -> Image.Image:
            return upscaler.upscale(image, size)
        warmup = variant != "reference"
        grid = upscaler.grid_for(image.width, image.height)
        facts = {"dtype": str(upscaler.dtype).removeprefix("torch."), "tile": grid.tile_size, "tiles": len(grid),
                 "kib_per_pixel": round(upscaler.calibration.bytes_per_pixel / 1024, 1),
                 "why_fp32": upscaler.calibration.reduced_refused}
    if warmup:
        run()
    times = []
    for _ in range(spec["repeat"] if variant != "reference" else 1):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    result.save(spec["output"])
    return {"times": times, "peak_rss_mb": peak_rss_mb(), **facts}


def run_worker(spec: dict, python: str = sys.executable, script: list[str] | None = None) -> dict:
    command = [python, *(script or ["-m", "benchmarks.upscaler", "--worker"]), json.dumps(spec)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"{spec['variant']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def webui_builtin(spec: dict) -> dict | None:
    """The WebUI's own upscaler in-process, in the A1111 checkout's venv (SD_WEBUI_ROOT, default
    ~/stable-diffusion-webui, as the tests find it); None, said once, where there is no such checkout."""
    sys.path.insert(0, str(ROOT / "tests" / "webui"))
    from harness import A1111, find_checkout

    checkout, why_not = find_checkout(A1111)
    if checkout is None:
        if not getattr(webui_builtin, "said", False):
            print(f"the WebUI's own upscaler: not run ({why_not})", flush=True)
            webui_builtin.said = True  # type: ignore[attr-defined]
        return None
    script = [str(ROOT / "benchmarks" / "webui_worker.py"), str(checkout.root)]
    return run_worker({**spec, "variant": "webui"}, python=str(checkout.python), script=script)


# -- the run ---------------------------------------------------------------------------

def psnr(a: Path, b: Path) -> float:
    x = np.asarray(Image.open(a).convert("RGB"), np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def measure(case: Case, workdir: Path, repeat: int, threads: int, quick: bool) -> dict:
    source = min(96, case.source) if quick else case.source
    target = case.target * source // case.source
    model = make_model(case.model, workdir)
    input_path = workdir / f"{case.name}-input.png"
    picture(source).save(input_path)
    spec = {"input": str(input_path), "model": str(model), "source": source, "target": target,
            "repeat": repeat, "threads": threads, "folder": case.folder}
    results: dict[str, dict] = {}
    for variant in variants(case):
        output = workdir / f"{case.name}-{variant}.png"
        results[variant] = {**run_worker({**spec, "variant": variant, "output": str(output)}), "output": output}
        print(f"  {case.name} {variant}: {statistics.median(results[variant]['times']):.2f} s", flush=True)
    webui = webui_builtin({**spec, "output": str(workdir / f"{case.name}-webui.png")})
    if webui is not None:
        results["webui"] = {**webui, "output": workdir / f"{case.name}-webui.png"}
    reference = results.pop("reference")["output"]
    builtin_time = statistics.median(results["builtin"]["times"]) if "builtin" in results else None
    webui_time = statistics.median(results["webui"]["times"]) if "webui" in results else None
    rows = {}
    for variant, result in results.items():
        median = statistics.median(result["times"])
        rows[variant] = {
            "seconds": round(median, 3),
            "speedup_vs_builtin": round(builtin_time / median, 2) if builtin_time else None,
            "speedup_vs_webui": round(webui_time / median, 2) if webui_time else None,
            "psnr_vs_fp32_full_frame": round(psnr(result["output"], reference), 1),
            "peak_rss_mb": round(result["peak_rss_mb"]),
            **{k: result[k] for k in ("dtype", "tile", "tiles", "kib_per_pixel", "why_fp32") if k in result},
        }
    return {"case": case.name, "note": case.note, "source": source, "target": target, "variants": rows}


def environment(threads: int) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from hires_upscale.upscaler import cpu_has_fast_bf16

    return {"device": "cpu", "cpu": cpu, "threads": threads, "torch": torch.__version__,
            "cpu_bf16": cpu_has_fast_bf16(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def markdown(report: dict) -> str:
    env = report["environment"]
    runs = dict.fromkeys((c.get("command", report["command"]), c.get("date", env["date"]), c.get("cpu", env["cpu"]))
                         for c in report["cases"])
    measured_by = "; ".join(f"`{command}` ({date}, {cpu})" for command, date, cpu in runs)
    lines = [
        "## Upscaler engine vs the WebUI's own path, per model family",
        "",
        f"{measured_by}; {env['threads']} thread(s), torch {env['torch']}. "
        "Median of the runs each command asks (`--repeat`, default 3); a ratio is the baseline's time / the "
        "variant's time, both measured in the same run ('vs the WebUI': its own upscaler in-process, from the "
        "A1111 checkout at SD_WEBUI_ROOT, default ~/stable-diffusion-webui). "
        "PSNR: final image vs our engine in fp32 on the whole frame.",
        "",
        "| case | variant | time (s) | vs built-in | vs the WebUI | PSNR (dB) | peak RSS (MB) | dtype | tile | "
        "activations (KiB/pixel, measured) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {"builtin": "built-in algorithm", "ours": "ours (auto precision)", "ours-fp32": "ours (fp32)",
             "webui": "the WebUI's own upscaler"}
    for case in report["cases"]:
        for variant, row in case["variants"].items():
            psnr_text = "n/a (BGR order)" if variant in ("builtin", "webui") else f"{row['psnr_vs_fp32_full_frame']}"
            versus_webui = f"{row['speedup_vs_webui']}x" if row["speedup_vs_webui"] else "not run"
            versus_builtin = f"{row['speedup_vs_builtin']}x" if row["speedup_vs_builtin"] else "n/a"
            lines.append(f"| {case['note']} | {names[variant]} | {row['seconds']} | {versus_builtin} | "
                         f"{versus_webui} | {psnr_text} | {row['peak_rss_mb']} | {row.get('dtype', '')} | "
                         f"{row.get('tile', '')} | {row.get('kib_per_pixel', '')} |")
    refused = {case["note"]: case["variants"]["ours"]["why_fp32"] for case in report["cases"]
               if case["variants"]["ours"].get("why_fp32")}
    if refused:
        lines += ["", "fp32 where the reduced precision was refused: "
                  + "; ".join(f"{note}: {why}" for note, why in refused.items()) + "."]
    lines += ["", "The built-in path feeds the model BGR tiles (a WebUI habit), so its PSNR against our RGB "
              "reference says nothing about quality and is not shown. The built-in algorithm is the WebUI's "
              "ESRGAN path; the transformer families (SwinIR, HAT, DAT) are measured against the WebUI's own "
              "upscaler for them only.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upscaler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1: stable on a "
                        "shared machine)")
    parser.add_argument("--quick", action="store_true", help="96x96 inputs: a smoke run, not figures to publish")
    parser.add_argument("--cases", default=",".join(c.name for c in CASES))
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where benchmarks.md and the JSON go")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    chosen = [c for c in CASES if c.name in args.cases.split(",")]
    subset = len(chosen) < len(CASES)
    flags = [" --quick" if args.quick else "", f" --repeat {args.repeat}" if args.repeat != 3 else "",
             f" --threads {args.threads}" if args.threads != 1 else "",
             f" --cases {args.cases}" if subset else ""]
    command = "python -m benchmarks.upscaler" + "".join(flags)
    env = environment(args.threads)
    with tempfile.TemporaryDirectory(prefix="hires-upscale-bench-") as workdir:
        cases = []
        for case in chosen:
            print(f"{case.name}: {case.note}", flush=True)
            measured = measure(case, Path(workdir), args.repeat, args.threads, args.quick)
            cases.append({**measured, "command": command, "date": env["date"], "cpu": env["cpu"]})
    if subset:
        cases = kept_cases(args.out / "benchmarks-upscaler.json", cases)
    report = {"command": command, "repeat": args.repeat, "environment": env, "cases": cases}
    publish(args.out, "upscaler", report, markdown(report))
    return 0


def kept_cases(previous: Path, fresh: list[dict]) -> list[dict]:
    """The cases of the last report that this run did not measure, with the command and date that
    did, in CASES order around the fresh ones: a slow benchmark can be rerun case by case."""
    try:
        old = json.loads(previous.read_text())
    except (OSError, ValueError):
        return fresh
    by_name = {c["case"]: {"command": old.get("command"), "date": old["environment"].get("date"),
                           "cpu": old["environment"].get("cpu"), **c}
               for c in old.get("cases", [])}
    by_name.update({c["case"]: c for c in fresh})
    return [by_name[case.name] for case in CASES if case.name in by_name]


if __name__ == "__main__":
    sys.exit(main())
