"""Time the WebUI's own upscaler for a model file in-process; run with the WebUI's venv python.

The file is copied into the folder the WebUI scans for its family (spec "folder": ESRGAN, SwinIR,
HAT, DAT) under a fresh data dir, and the WebUI's upscaler listed for it runs.

    <webui>/venv/bin/python benchmarks/webui_worker.py <webui root> '<json spec>'

Started by benchmarks/upscaler.py. Prints one JSON line: times, peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(root: str, spec: dict) -> dict:
    os.chdir(root)
    sys.path.insert(0, root)
    data_dir = Path(tempfile.mkdtemp(prefix="hires-upscale-bench-data-"))
    folder = spec.get("folder", "ESRGAN")
    model = data_dir / "models" / folder / Path(spec["model"]).name
    model.parent.mkdir(parents=True)
    shutil.copyfile(spec["model"], model)
    empty = tempfile.mkdtemp(prefix="hires-upscale-bench-ckpt-")
    # each host's CPU switch (tests/webui/harness.py has the same): Forge has no --use-cpu/--precision
    cpu = ["--always-cpu"] if (Path(root) / "modules_forge").is_dir() else \
        ["--use-cpu", "all", "--no-half", "--precision", "full"]
    sys.argv = ["webui", *cpu, "--skip-torch-cuda-test", "--no-download-sd-model", "--ckpt-dir", empty,
                "--data-dir", str(data_dir)]
    from modules import initialize

    initialize.imports()
    initialize.initialize()
    import torch
    from modules import shared

    # SwinIR's settings are added by its UI callback, which never runs here: its own defaults then.
    for key, default in (("SWIN_tile", 192), ("SWIN_tile_overlap", 8)):
        if not hasattr(shared.opts, key):
            shared.opts.data[key] = default
    from PIL import Image

    torch.set_num_threads(spec["threads"])
    upscaler = next(u for u in shared.sd_upscalers if u.data_path and Path(u.data_path).resolve() == model.resolve())
    image = Image.open(spec["input"]).convert("RGB")
    scale = spec["target"] / image.width
    times = []
    for _ in range(spec["repeat"]):
        start = time.perf_counter()
        result = upscaler.scaler.upscale(image, scale, upscaler.data_path)
        times.append(time.perf_counter() - start)
    result.save(spec["output"])
    return {"times": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "dtype": "float32", "tile": shared.opts.SWIN_tile if folder == "SwinIR" else shared.opts.ESRGAN_tile}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
