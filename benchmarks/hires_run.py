"""A whole hires run in the real WebUI: ours against the built-in Hires fix, same session.

    python -m benchmarks.hires_run [--repeat 3] [--sizes 64 128] [--batch-sizes 1 2 4]
                                   [--host a1111|forge] [--model random|x4plus]

Starts the WebUI (--host: A1111 from SD_WEBUI_ROOT or ~/stable-diffusion-webui, Forge from
SD_WEBUI_FORGE_ROOT or ~/stable-diffusion-webui-forge) on the CPU with this extension
(tests/webui/harness.py), a random SD1.5 checkpoint and an RRDB 4x: a full-size random one
(23 blocks, 64 features), or (--model x4plus) Real-ESRGAN's trained x4plus (tests/trained_models.py).
For each size, txt2img with
4 steps, then 4 hires steps at denoise 0.3 with Euler, three ways, interleaved:
the built-in Hires fix with the RRDB model, this extension with the same model,
and the built-in Hires fix with Lanczos (what the upscale stage costs at least),
at each batch size (the built-in denoises a batch in one sampler run; so does
this extension's batched second pass). Medians of `--repeat` runs; ratios
against the built-in RRDB run of the same session. Results into docs/benchmarks.md and docs/benchmarks-hires-run.json.
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
SIZES = (64, 128)
BATCH_SIZES = (1,)
STEPS = 4
DENOISE = 0.3


def request(variant: str, source: int, batch_size: int, model: str = MODEL, host: str = "a1111") -> dict:
    body = {"prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "steps": STEPS, "width": source,
            "height": source, "sampler_name": "Euler", "seed": 1234, "cfg_scale": 7, "batch_size": batch_size}
    if variant in ("builtin-rrdb", "builtin-lanczos"):
        body.update(enable_hr=True, hr_scale=2, hr_second_pass_steps=STEPS, denoising_strength=DENOISE,
                    hr_upscaler=model if variant == "builtin-rrdb" else "Lanczos")
        if host == "forge":  # its API answers 500 without the modules choice, and its hr_cfg defaults to 1
            body.update(hr_additional_modules=["Use same choices"], hr_cfg=7)
    else:
        params = {"upscaler": model, "scale": 2, "denoise": DENOISE, "hires_steps": STEPS}
        body["alwayson_scripts"] = {"hires upscale": {"args": [params]}}
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hires_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="first-pass sizes (2x targets)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--host", choices=("a1111", "forge"), default="a1111")
    parser.add_argument("--model", choices=("random", "x4plus"), default="random",
                        help="a random full-size RRDB, or Real-ESRGAN's trained x4plus")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)

    import models
    from harness import A1111, FORGE, WebUI, decode, find_checkout

    checkout, why_not = find_checkout(A1111 if args.host == "a1111" else FORGE)
    if checkout is None:
        print(f"no WebUI to measure in: {why_not}", file=sys.stderr)
        return 2
    if args.model == "x4plus":
        import trained_models

        model_name, module = "RealESRGAN-x4plus", trained_models.module(trained_models.MODELS["x4plus"])
    else:
        model_name, module = MODEL, models.rrdb(4)
    variants = ("builtin-rrdb", "ours-rrdb", "builtin-lanczos")
    cases_of = [(source, batch) for source in args.sizes for batch in args.batch_sizes]
    with tempfile.TemporaryDirectory(prefix="hires-upscale-bench-run-") as workdir:
        server = WebUI(checkout, Path(workdir), extra_models={model_name: module})
        try:
            server.start()
            times: dict[tuple[int, int, str], list[float]] = {}
            for source, batch in cases_of:
                target = 2 * source
                for variant in variants:  # warm-up: loads the checkpoint, caches, first-call costs
                    server.post("/sdapi/v1/txt2img", request(variant, source, batch, model_name, args.host))
                for run in range(args.repeat):
                    for variant in variants:
                        start = time.perf_counter()
                        reply = server.post("/sdapi/v1/txt2img",
                                            request(variant, source, batch, model_name, args.host))
                        elapsed = time.perf_counter() - start
                        if reply.status != 200:
                            raise RuntimeError(f"{variant} failed: {reply.body}\n{server.log_tail()}")
                        sizes = [decode(image).size for image in reply.json()["images"]]
                        if sizes != [(target, target)] * batch:
                            raise RuntimeError(f"{variant} returned {sizes}, expected {batch}x {target}x{target}")
                        times.setdefault((source, batch, variant), []).append(elapsed)
                        print(f"  {source}->{target} x{batch} {variant} run {run + 1}: {elapsed:.1f} s", flush=True)
        finally:
            server.stop()
    cases = []
    for source, batch in cases_of:
        medians = {v: statistics.median(times[(source, batch, v)]) for v in variants}
        cases.append({"source": source, "target": 2 * source, "batch_size": batch,
                      "seconds": {v: round(t, 2) for v, t in medians.items()},
                      "ours_vs_builtin": round(medians["ours-rrdb"] / medians["builtin-rrdb"], 3),
                      "runs": {v: [round(t, 2) for t in times[(source, batch, v)]] for v in variants}})
    command = "python -m benchmarks.hires_run" + "".join((
        f" --repeat {args.repeat}" if args.repeat != 3 else "",
        " --sizes " + " ".join(map(str, args.sizes)) if args.sizes != list(SIZES) else "",
        " --batch-sizes " + " ".join(map(str, args.batch_sizes)) if args.batch_sizes != list(BATCH_SIZES) else "",
        f" --host {args.host}" if args.host != "a1111" else "",
        f" --model {args.model}" if args.model != "random" else ""))
    report = {"command": command,
              "webui": server.version, "repeat": args.repeat, "steps": STEPS, "denoise": DENOISE,
              "date": time.strftime("%Y-%m-%d"), "cases": cases}
    lines = [
        f"## A whole hires run in {'Forge' if args.host == 'forge' else 'A1111'}: this extension vs the built-in "
        "Hires fix" + (" (trained x4plus)" if args.model == "x4plus" else ""),
        "",
        f"`{report['command']}` in WebUI {report['webui']} on the CPU, random SD1.5 checkpoint, "
        f"{'Real-ESRGAN' + chr(39) + 's trained x4plus' if args.model == 'x4plus' else 'random full-size RRDB 4x'}, "
        f"{STEPS} steps then {STEPS} hires steps at denoise {DENOISE}, Euler; median of {args.repeat} "
        f"interleaved runs in one WebUI session, {report['date']}. The ratio is ours / built-in (lower is faster).",
        "",
        "| size | batch | built-in Hires fix, RRDB (s) | this extension, RRDB (s) | ratio | built-in, Lanczos (s) |",
        "|---|---|---|---|---|---|",
    ]
    for case in cases:
        s = case["seconds"]
        lines.append(f"| {case['source']} → {case['target']} | {case['batch_size']} | {s['builtin-rrdb']} | "
                     f"{s['ours-rrdb']} | {case['ours_vs_builtin']}x | {s['builtin-lanczos']} |")
    section = "hires-run" if (args.host, args.model) == ("a1111", "random") else f"hires-run-{args.model}-{args.host}"
    publish(args.out, section, report, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
