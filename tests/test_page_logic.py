"""The page's JavaScript gives the core's answers: sizes, facts, advice messages, tile grids.

Vectors are computed here by the Python core and checked by node's built-in test
runner against javascript/hires_upscale.js, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

from hires_upscale.advice import MAX_STEPS_RATIO, rules_as_data
from hires_upscale.params import HiresParams
from hires_upscale.plan import make_plan
from hires_upscale.resolution import FAMILIES, PRESETS, UNKNOWN, plan_resize
from hires_upscale.resolution import family as family_of
from hires_upscale.tiling import make_grid
from hires_upscale.upscaler import activation_bytes_per_pixel, overlap_for

ROOT = Path(__file__).resolve().parents[1]
UPSCALERS = {"4x-UltraSharp": "model", "Latent (bicubic)": "latent", "Lanczos": "pixel", "None": "none"}


def random_params(rng: random.Random, family: str) -> HiresParams:
    mode = rng.choice(["scale", "size", "preset"])
    width, height = rng.choice([0, 64 * rng.randint(1, 40), rng.randint(1, 3000)]), rng.randint(0, 3000)
    if mode == "size" and not (width or height):
        width = 1000
    return HiresParams(
        enabled=True, upscaler=rng.choice(list(UPSCALERS)), resize_mode=mode,
        scale=rng.choice([1.0, 1.5, 2.0, 2.5, 3.0, round(rng.uniform(1, 8), 2)]), width=width, height=height,
        preset=rng.choice([p.name for p in PRESETS[family]]), fit=rng.choice(["crop", "fill", "stretch"]),
        denoise=rng.choice([0.0, 0.2, 0.3, 0.45, 0.5, 0.55, 0.7, round(rng.uniform(0, 1), 2)]),
        hires_steps=rng.choice([0, 10, 20, 41, 60, 150]), tiled=rng.choice(["auto", "on", "off"]),
        passes=rng.choice([1, 1, 0, 0, 2, 3, 4]), cfg_scale=rng.choice([0.0, 0.0, 1.0, 3.5, 7.0]),
    )


def vectors() -> dict:
    rng = random.Random(20261126)
    sizes, advice, grids = [], [], []
    for _ in range(400):
        family = rng.choice([*FAMILIES, UNKNOWN])
        params = random_params(rng, family)
        while params.errors():  # a refused run has no plan to compare
            params = random_params(rng, family)
        source = (rng.randint(16, 2048), rng.randint(16, 2048))
        multiple = rng.choice([1, 8, 64])
        plan = plan_resize(source, mode=params.resize_mode, scale=params.scale, width=params.width,
                           height=params.height, preset=params.preset, fit=params.fit, family_name=family,
                           multiple=multiple, max_pixels=10**12)
        sizes.append({"source": source, "params": params.as_dict(), "family": family, "multiple": multiple,
                      "requested": plan.requested, "target": plan.target, "upscaled": plan.upscaled,
                      "snapped": plan.snapped})
        steps = rng.choice([None, 4, 20, 30])
        full = make_plan(source, params, family, first_pass_steps=steps, max_pixels=10**12)
        fam = family_of(family)
        advice.append({
            "source": source, "params": params.as_dict(), "first_pass_steps": steps,
            "kind": UPSCALERS[params.upscaler],
            "family": {**fam.as_dict(), "max_steps_ratio": MAX_STEPS_RATIO},
            "facts": full.facts(), "advice": [a.as_dict() for a in full.advice],
        })
        tile = rng.choice([64, 96, 192, 256, 512])
        big = max(source) > tile
        grid = make_grid(*source, tile, overlap_for(tile) if big else 0)
        grids.append({"source": source, "tile": tile, "columns": grid.columns, "rows": grid.rows})
    return {"sizes": sizes, "advice": advice, "grids": grids, "rules": rules_as_data(),
            "tile_bytes_per_pixel": activation_bytes_per_pixel(4, 2),
            "presets": {name: [p.as_dict() for p in presets] for name, presets in PRESETS.items()}}


def test_the_page_logic_matches_the_core(tmp_path):
    node = shutil.which("node")
    assert node is not None, "node runs the page's own logic (javascript/hires_upscale.js): install Node.js"
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps(vectors()))
    done = subprocess.run([node, "--test", str(ROOT / "tests" / "js")], capture_output=True, text=True,
                          env={"HU_VECTORS": str(path), "PATH": str(Path(node).parent)}, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
