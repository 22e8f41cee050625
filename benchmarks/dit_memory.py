"""Where a Flux second pass's memory goes: the weights, or the activations that tiles would shrink.

    python -m benchmarks.dit_memory [--host forge|forge-neo] [--tokens 1024 4096]

Decides whether tiled mode is worth having on a DiT (README, "Low-VRAM mode"). It runs the host's
own Flux transformer code (`backend.nn.flux.IntegratedFluxTransformer2DModel`, in the host's venv,
from its checkout: SD_WEBUI_FORGE_ROOT or ~/stable-diffusion-webui-forge, or Forge Neo's) at Flux
dev's full width (hidden 3072, 24 heads, 4096-wide T5 context, 256 text tokens) with one double and
one single block, random weights, fp32 on the CPU, and measures for each image-token count the
peak resident memory a forward adds to what the model holds (sampled every millisecond in a
thread). Blocks run one after another and free their activations, so a whole model's step peaks
near its weights plus about one block's activations: the measured peak stands for a 57-block step.
The weights of the real model are counted from its published shape (19 double + 38 single blocks).
Results into docs/benchmarks.md and docs/benchmarks-dit-memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "webui"))

from benchmarks.report import publish  # noqa: E402

#: Flux.1 dev's shape (Forge's huggingface_guess hard-codes it for every Flux file)
DOUBLE_BLOCKS, SINGLE_BLOCKS, HIDDEN, HEADS, TEXT_TOKENS = 19, 38, 3072, 24, 256

#: run in the host's venv, from its root: one forward per token count, in a fresh process each
PROBE = r"""
import gc, json, sys, threading, time
import psutil, torch
tokens = int(sys.argv[1])
sys.argv = [sys.argv[0], sys.argv[2]]  # the host's CPU switch, read by its backend at import
from backend.nn.flux import IntegratedFluxTransformer2DModel

torch.set_num_threads(2)
torch.manual_seed(0)
model = IntegratedFluxTransformer2DModel(
    in_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24,
    depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, guidance_embed=True).eval()
per_side = int(tokens ** 0.5) * 2  # latent rows and columns: 2x2 patches make one token
x = torch.randn(1, 16, per_side, per_side)
context, y = torch.randn(1, 256, 4096), torch.randn(1, 768)
t, guidance = torch.tensor([0.5]), torch.tensor([3.5])
process = psutil.Process()
gc.collect()
before = process.memory_info().rss
peak = [before]
done = threading.Event()

def sample():
    while not done.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.001)

watcher = threading.Thread(target=sample)
watcher.start()
start = time.perf_counter()
with torch.inference_mode():
    model(x, t, context, y, guidance)
seconds = time.perf_counter() - start
done.set()
watcher.join()
params = sum(p.numel() for p in model.parameters())
blocks = sum(p.numel() for b in (*model.double_blocks, *model.single_blocks) for p in b.parameters())
print(json.dumps({"tokens": tokens, "latent": per_side, "pixels": per_side * 8, "peak_added": peak[0] - before,
                  "seconds": seconds, "params": params, "double_params": sum(p.numel() for p in
                  model.double_blocks.parameters()), "single_params": sum(p.numel() for p in
                  model.single_blocks.parameters()), "block_params": blocks}))
"""


def measure(checkout, tokens: int) -> dict:
    cpu_switch = "--cpu" if checkout.kind == "forge-neo" else "--always-cpu"
    # the host's own package folders, as its modules/paths.py adds them
    path = os.pathsep.join(str(checkout.root / sub) for sub in ("", "packages_3rdparty", "modules_forge/packages"))
    done = subprocess.run([str(checkout.python), "-c", PROBE, str(tokens), cpu_switch], cwd=checkout.root,
                          capture_output=True, text=True, timeout=1800, env={**os.environ, "PYTHONPATH": path})
    if done.returncode != 0:
        raise RuntimeError(f"the probe failed in {checkout.root}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(report: dict, argv: list[str]) -> str:
    gib = 1024**3
    rows = "\n".join(
        f"| {r['pixels']}² ({r['tokens']} tokens) | {r['peak_added'] / gib:.2f} | {r['peak_added'] / 2 / gib:.2f} "
        f"| {r['seconds']:.1f} |" for r in report["runs"])
    weights = report["full_model_params"]
    return (
        f"`python -m benchmarks.dit_memory {' '.join(argv)}` on {report['host']} ({report['version']}), CPU, fp32, "
        f"{report['date']}. The host's own Flux transformer at full width with one double and one single block; "
        "the peak memory one forward adds to the model's (what tiles could shrink), and what that is in bf16:\n\n"
        "| image | activations fp32 (GiB) | bf16 (GiB) | forward (s) |\n|---|---|---|---|\n"
        f"{rows}\n\n"
        f"The whole model holds {weights / 1e9:.1f} B parameters ({DOUBLE_BLOCKS} double + {SINGLE_BLOCKS} single "
        f"blocks, counted from the measured blocks): {weights * 2 / gib:.1f} GiB in bf16, {weights / gib:.1f} GiB in "
        "fp8. Its blocks run one after another, so a step peaks near the weights plus one block's activations.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dit_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", choices=("forge", "forge-neo"), default="forge")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096],
                        help="image tokens (a 2x2 patch of the latent each): 1024 = 512², 4096 = 1024²")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)

    import datetime

    from harness import FORGE, FORGE_NEO, find_checkout

    checkout, why_not = find_checkout(FORGE if args.host == "forge" else FORGE_NEO)
    if checkout is None:
        print(f"no host to measure in: {why_not}", file=sys.stderr)
        return 2
    runs = []
    for tokens in args.tokens:
        run = measure(checkout, tokens)
        print(f"  {run['pixels']}² ({tokens} tokens): +{run['peak_added'] / 1024**3:.2f} GiB, {run['seconds']:.1f} s",
              flush=True)
        runs.append(run)
    first = runs[0]
    full = DOUBLE_BLOCKS * first["double_params"] + SINGLE_BLOCKS * first["single_params"] + (
        first["params"] - first["block_params"])
    report = {"host": checkout.host.title, "version": checkout.version, "date": datetime.date.today().isoformat(),
              "runs": runs, "full_model_params": full}
    publish(args.out, "dit-memory", report, render(report, argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
