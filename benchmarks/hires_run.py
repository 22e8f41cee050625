"""A whole hires run in the real WebUI: ours against the built-in Hires fix, same session.

    python -m benchmarks.hires_run [--repeat 3]

Starts the WebUI from SD_WEBUI_ROOT (or ~/stable-diffusion-webui) on the CPU with
this extension (tests/webui/harness.py), a random SD1.5 checkpoint and a
full-size random RRDB 4x (23 blocks, 64 features). For each size, txt2img with
4 steps, then 4 hires steps at denoise 0.3 with Euler, three ways, interleaved:
the built-in Hires fix with the RRDB model, this extension with the same model,
and the built-in Hires fix with Lanczos (what the upscale stage costs at least).
Medians of `--repeat` runs; ratios against the built-in RRDB run of the same
session. Results into docs/benchmarks.md and docs/benchmarks-hires-run.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "webui"))

from benchmarks.report import publish  # noqa: E402

MODEL = "4x-BenchRRDB"
SIZES = ((64, 128), (128, 256))
STEPS = 4
DENOISE = 0.3


def request(variant: str, source: int) -> dict:
    body = {"prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "steps": STEPS, "width": source,
            "height": source, "sampler_name": "Euler", "seed": 1234, "cfg_scale": 7}
    if variant in ("builtin-rrdb", "builtin-lanczos"):
        body.update(enable_hr=True, hr_scale=2, hr_second_pass_steps=STEPS, denoising_strength=DENOISE,
                    hr_upscaler=MODEL if variant == "builtin-rrdb" else "Lanczos")
    else:
        args = [True, MODEL, "scale", 2, 0, 0, "", "crop", DENOISE, STEPS, "", "", False, 0, False, 0.3]
        body["alwayson_scripts"] = {"hires upscale": {"args": args}}
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hires_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)

    import models
    from harness import WebUI, decode, webui_root

    root, why_not = webui_root()
    if root is None:
        print(f"no WebUI to measure in: {why_not}", file=sys.stderr)
        return 2
    variants = ("builtin-rrdb", "ours-rrdb", "builtin-lanczos")
    with tempfile.TemporaryDirectory(prefix="hires-upscale-bench-run-") as workdir:
        server = WebUI(root, Path(workdir), extra_models={MODEL: models.rrdb(4)})
        try:
            server.start()
            times: dict[tuple[int, str], list[float]] = {}
            for source, target in SIZES:
                for variant in variants:  # warm-up: loads the checkpoint, caches, first-call costs
                    server.post("/sdapi/v1/txt2img", request(variant, source))
                for run in range(args.repeat):
                    for variant in variants:
                        start = time.perf_counter()
                        reply = server.post("/sdapi/v1/txt2img", request(variant, source))
                        elapsed = time.perf_counter() - start
                        if reply.status != 200:
                            raise RuntimeError(f"{variant} failed: {reply.body}\n{server.log_tail()}")
                        size = decode(reply.json()["images"][0]).size
                        if size != (target, target):
                            raise RuntimeError(f"{variant} returned {size}, expected {target}x{target}")
                        times.setdefault((source, variant), []).append(elapsed)
                        print(f"  {source}->{target} {variant} run {run + 1}: {elapsed:.1f} s", flush=True)
        finally:
            server.stop()
    cases = []
    for source, target in SIZES:
        medians = {v: statistics.median(times[(source, v)]) for v in variants}
        cases.append({"source": source, "target": target, "seconds": {v: round(t, 2) for v, t in medians.items()},
                      "ours_vs_builtin": round(medians["ours-rrdb"] / medians["builtin-rrdb"], 3),
                      "runs": {v: [round(t, 2) for t in times[(source, v)]] for v in variants}})
    report = {"command": "python -m benchmarks.hires_run" + (f" --repeat {args.repeat}" if args.repeat != 3 else ""),
              "webui": server.version, "repeat": args.repeat, "steps": STEPS, "denoise": DENOISE,
              "date": time.strftime("%Y-%m-%d"), "cases": cases}
    lines = [
        "## A whole hires run in the WebUI: this extension vs the built-in Hires fix",
        "",
        f"`{report['command']}` in WebUI {report['webui']} on the CPU, random SD1.5 checkpoint, random full-size "
        f"RRDB 4x, {STEPS} steps then {STEPS} hires steps at denoise {DENOISE}, Euler; median of {args.repeat} "
        f"interleaved runs in one WebUI session, {report['date']}. The ratio is ours / built-in (lower is faster).",
        "",
        "| size | built-in Hires fix, RRDB (s) | this extension, RRDB (s) | ratio | built-in, Lanczos (s) |",
        "|---|---|---|---|---|",
    ]
    for case in cases:
        s = case["seconds"]
        lines.append(f"| {case['source']} → {case['target']} | {s['builtin-rrdb']} | {s['ours-rrdb']} | "
                     f"{case['ours_vs_builtin']}x | {s['builtin-lanczos']} |")
    publish(args.out, "hires-run", report, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
