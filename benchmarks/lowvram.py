"""The tiled (low-VRAM) second pass against full frame, measured in the same run.

    python -m benchmarks.lowvram [--sizes 1024,2048] [--steps 2] [--threads 0] [--device auto]

SD1.5's VAE and UNet (diffusers modules, random weights, seeded so every process
builds the same ones) at each size: VAE encode of a picture, `--steps` UNet calls
with conditioning for a batch of cond + uncond, VAE decode of one fixed latent.
"full" runs them as they are, "tiled" inside hires_upscale.tiled_vae's and tiled_unet's wrappers with
its default tiles. Each variant runs in a process of its own, so its peak memory
is its own: the working memory above the weights, CUDA's max allocated on a GPU,
the resident size sampled every 2 ms on the CPU.

Quality: PSNR of the tiled decode against the full one (same latent), and a seam
score: the mean gradient across the tiles' edges over the mean gradient across the
other lines of the same phase in the 8-pixel grid (1.0 = the edges are invisible in
the statistics; the full frame measured at the same lines is the reference). Results: printed, and written
to docs/benchmarks.md (between markers) and docs/benchmarks-lowvram.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.report import publish  # noqa: E402
from hires_upscale.memory import VAE_FACTOR  # noqa: E402

VARIANTS = ("full", "tiled")
#: SD1.5's VAE and UNet, as diffusers configures them
VAE_CONFIG = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                  up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4,
                  norm_num_groups=32)
UNET_CONFIG = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                   block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=768, attention_head_dim=8,
                   down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                   up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)


def picture(size: int) -> np.ndarray:
    """A smooth picture in [-1, 1], (3, size, size), whose content differs across tiles."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    return np.stack([np.sin(6 * xx) * 0.8, np.cos(5 * yy) * 0.8, xx - yy]).astype(np.float32)


def fixed_latent(size: int) -> np.ndarray:
    """The latent both variants decode: the picture at 1/8, a fourth channel from the others."""
    image = picture(size)
    small = image.reshape(3, size // 8, 8, size // 8, 8).mean(axis=(2, 4))
    return np.concatenate([small, small.mean(axis=0, keepdims=True)])[None] * 2


class WorkingMemory:
    """Peak memory while the block runs, above what was held when it began (the weights and
    inputs): CUDA's max allocated on a GPU, the resident size sampled every 2 ms on the CPU."""

    def __init__(self, device) -> None:
        self.device = device
        self.peak_mb = 0.0

    def __enter__(self) -> WorkingMemory:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = _rss()
            self.highest = self.base
            self.done = threading.Event()
            self.sampler = threading.Thread(target=self._sample, daemon=True)
            self.sampler.start()
        return self

    def _sample(self) -> None:
        while not self.done.wait(0.002):
            self.highest = max(self.highest, _rss())

    def __exit__(self, *exc) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.done.set()
            self.sampler.join()
            peak = max(self.highest, _rss())
        self.peak_mb = (peak - self.base) / 2**20


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def worker(spec: dict) -> dict:
    """One variant at one size, in this process."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from hires_upscale.memory import TileSettings
    from hires_upscale.tiled_unet import tiled_model_call
    from hires_upscale.tiled_vae import tiled_vae

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    vae = AutoencoderKL(**VAE_CONFIG).eval().to(device, dtype)
    unet = UNet2DConditionModel(**UNET_CONFIG).eval().to(device, dtype) if spec["steps"] else None
    size, tiled, settings = spec["size"], spec["variant"] == "tiled", TileSettings()
    image = torch.from_numpy(picture(size))[None].to(device, dtype)
    latent = torch.from_numpy(fixed_latent(size)).to(device, dtype)
    cond = torch.randn(2, 77, 768, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    times: dict[str, float] = {}

    def timed(name, fn):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times[name] = time.perf_counter() - start
        return result

    def model(x, t, c):
        return unet(x, t, encoder_hidden_states=c).sample

    def denoise(x, t):
        if tiled:
            return tiled_model_call(model, x, t, cond, tile=settings.unet_tile, overlap=settings.unet_overlap,
                                    batch=settings.unet_batch)
        return model(x, t, cond)

    memory = WorkingMemory(device)
    with torch.no_grad(), tiled_vae(vae.encoder, vae.decoder, settings) if tiled else nullcontext(), memory:
        encoded = timed("vae encode", lambda: vae.encoder(image))
        x = encoded[:, :4].repeat(2, 1, 1, 1)  # cond and uncond rows, as a CFG sampler sends them
        for step in range(spec["steps"]):
            t = torch.full((2,), 500 - 100 * step, device=device)
            x = x - 0.1 * timed(f"unet step {step + 1}", lambda x=x, t=t: denoise(x, t))
        decoded = timed("vae decode", lambda: vae.decoder(latent))
    np.savez(spec["output"], decoded=decoded.float().cpu().numpy(), encoded=encoded.float().cpu().numpy(),
             unet=x.float().cpu().numpy())
    return {"times": times, "peak_mb": memory.peak_mb, "device": str(device), "dtype": str(dtype)}


def run_worker(spec: dict) -> dict:
    command = [sys.executable, "-m", "benchmarks.lowvram", "--worker", json.dumps(spec)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"{spec['variant']} at {spec['size']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    """Over the reference's own range (random weights give no fixed range)."""
    peak = float(reference.max() - reference.min())
    mse = float(((reference - other) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def seam_score(image: np.ndarray, edges: list[int], axis: int) -> float:
    """Mean absolute difference between neighbouring pixels across `edges` (pixel positions
    where a tile starts or ends) over the same across every other line of the same phase,
    along `axis` of a (C, H, W) image. Tile edges lie on multiples of 8 pixels, where a
    decoder's x2 upsamplings leave a pattern of their own, so only lines at the same place
    in that 8-pixel pattern are compared."""
    steps = np.abs(np.diff(image, axis=axis)).mean(axis=tuple(a for a in range(3) if a != axis))
    on = [e - 1 for e in edges if 0 < e < image.shape[axis]]
    if not on:  # one tile: nothing to compare
        return math.nan
    off = np.zeros(steps.shape[0], dtype=bool)
    off[VAE_FACTOR - 1::VAE_FACTOR] = True  # the step from pixel 8k-1 to 8k, as at every edge
    off[on] = False
    return float(steps[on].mean() / steps[off].mean())


def tile_edges(size: int) -> list[int]:
    """Pixel positions of the tiled decode's tile edges (the grid is the same on both axes)."""
    from hires_upscale.memory import TileSettings
    from hires_upscale.tiling import fitted_grid

    settings = TileSettings()
    grid = fitted_grid(size // VAE_FACTOR, size // VAE_FACTOR, settings.vae_tile, settings.vae_overlap)
    return sorted({e * VAE_FACTOR for x in grid.xs for e in (x, x + grid.tile_width)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1024,2048", help="square sizes in pixels, comma-separated")
    parser.add_argument("--steps", type=int, default=2, help="UNet calls per variant (0: the VAE only)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    parser.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu or cuda")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            results = {}
            for variant in VARIANTS:
                spec = {"variant": variant, "size": size, "steps": args.steps, "threads": args.threads,
                        "device": device, "output": str(Path(folder) / f"{variant}-{size}.npz")}
                results[variant] = run_worker(spec)
                print(f"{size} {variant}: {results[variant]}", flush=True)
            full, tiled = (np.load(Path(folder) / f"{v}-{size}.npz") for v in VARIANTS)
            edges = tile_edges(size)
            decoded = tiled["decoded"][0]
            rows.append({
                "size": size,
                **{v: results[v] for v in VARIANTS},
                "time_ratio": {stage: results["tiled"]["times"][stage] / results["full"]["times"][stage]
                               for stage in results["full"]["times"]},
                "second_pass_time_ratio": sum(results["tiled"]["times"].values())
                / sum(results["full"]["times"].values()),
                "peak_memory_ratio": results["tiled"]["peak_mb"] / results["full"]["peak_mb"],
                "decode_psnr_db": psnr(full["decoded"], tiled["decoded"]),
                "encode_psnr_db": psnr(full["encoded"], tiled["encoded"]),
                "unet_psnr_db": psnr(full["unet"], tiled["unet"]) if args.steps else None,
                "seam_score": max(seam_score(decoded, edges, 1), seam_score(decoded, edges, 2)),
                "seam_score_full_frame": max(seam_score(full["decoded"][0], edges, 1),
                                             seam_score(full["decoded"][0], edges, 2)),
            })
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "device": device,
                          "gpu": torch.cuda.get_device_name() if device == "cuda" else None},
              "steps": args.steps, "threads": args.threads, "rows": rows}
    publish(args.out, "lowvram", report, render(report, argv))
    return 0


def _score(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def render(report: dict, argv: list[str] | None) -> str:
    machine = report["machine"]
    where = machine["gpu"] or f"{machine['processor']} CPU, {report['threads'] or 'default'} threads"
    command = "python -m benchmarks.lowvram " + " ".join(argv or sys.argv[1:])
    lines = [
        "## Tiled second pass (low-VRAM mode) vs full frame",
        "",
        f"`{command.strip()}` on {where}, torch {machine['torch']}; SD1.5 VAE and UNet (diffusers, random "
        f"weights), VAE encode + {report['steps']} UNet calls (batch 2: cond + uncond) + VAE decode, each "
        "variant in its own process. Peak is working memory: above what the weights and inputs "
        "held before the stages began. Ratios are tiled / full frame from the same run.",
        "",
        "| size | full: time, peak | tiled: time, peak | time ratio | peak memory ratio | decode PSNR | "
        "encode PSNR | UNet PSNR | seam score: tiled / full frame at the same lines (relative) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        full, tiled = row["full"], row["tiled"]
        unet = f"{row['unet_psnr_db']:.1f} dB" if row["unet_psnr_db"] is not None else "-"
        lines.append(
            f"| {row['size']}² | {sum(full['times'].values()):.2f} s, {full['peak_mb']:.0f} MB | "
            f"{sum(tiled['times'].values()):.2f} s, {tiled['peak_mb']:.0f} MB | {row['second_pass_time_ratio']:.2f}x | "
            f"{row['peak_memory_ratio']:.2f} | {row['decode_psnr_db']:.1f} dB | {row['encode_psnr_db']:.1f} dB | "
            f"{unet} | {_score(row['seam_score'])} / {_score(row['seam_score_full_frame'])} "
            f"({_score(row['seam_score'] / row['seam_score_full_frame'])}) |")
    lines += ["", "A seam score compares the gradient across the tiles' edges with the gradient across the other "
              "lines of the same phase in the 8-pixel grid; a random-weight decoder has patterns of its own at "
              "some of those lines, so the full frame measured at the same lines is the reference, and "
              "relative = tiled / full frame (above 1: edges stand out; below: the blend smooths them)."]
    lines += ["", "Per stage (tiled / full time): " + "; ".join(
        f"{row['size']}²: " + ", ".join(f"{stage} {ratio:.2f}x" for stage, ratio in row["time_ratio"].items())
        for row in report["rows"])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
