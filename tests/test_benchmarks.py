"""The benchmark code itself: the baseline is faithful and the runner produces its report.

No timing is asserted here; speed is read from `python -m benchmarks.upscaler`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import noise_image
from PIL import Image

from benchmarks import builtin
from benchmarks import upscaler as bench
from benchmarks.report import write_section


class NearestUpsample(torch.nn.Module):
    """A pointwise "model": overlapping tiles agree exactly, so any misplaced tile shows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(4, 2).repeat_interleave(4, 3)


@pytest.mark.parametrize("size", [(64, 48), (192, 192), (300, 200), (400, 385)])
def test_builtin_tiles_are_placed_and_blended_like_the_webui(size):
    image = noise_image(*size)
    result = builtin.tiled_upscale(NearestUpsample(), image, 4)
    expected = image.resize((size[0] * 4, size[1] * 4), Image.Resampling.NEAREST)
    difference = np.abs(np.asarray(result, int) - np.asarray(expected, int))
    assert result.size == expected.size
    assert difference.max() <= 1  # 8-bit mask blending of equal pixels rounds by at most 1


def test_builtin_origins_match_split_grid():
    assert builtin._tile_origins(64, 192, 8) == [-128]  # small images: one tile, padded on the left/top
    assert builtin._tile_origins(400, 192, 8) == [0, 104, 208]


def test_the_runner_writes_its_report(tmp_path, monkeypatch, capsys):
    # a folder that is no WebUI: its column is said not run, and the rest is measured and written
    monkeypatch.setenv("SD_WEBUI_ROOT", str(tmp_path))
    cases = "compact-256-to-2x,swinir-64-to-2x"
    assert bench.main(["--quick", "--repeat", "1", "--cases", cases, "--out", str(tmp_path)]) == 0
    assert f"the WebUI's own upscaler: not run (no AUTOMATIC1111 checkout at {tmp_path}" in capsys.readouterr().out
    report = json.loads((tmp_path / "benchmarks-upscaler.json").read_text())
    compact, swinir = (case["variants"] for case in report["cases"])
    assert set(compact) == {"builtin", "ours", "ours-fp32"}
    assert set(swinir) == {"ours", "ours-fp32"}  # the built-in rewrite is the ESRGAN path only
    assert compact["ours-fp32"]["psnr_vs_fp32_full_frame"] >= 60
    assert swinir["ours"]["psnr_vs_fp32_full_frame"] >= 45
    assert report["environment"]["torch"] == torch.__version__
    text = (tmp_path / "benchmarks.md").read_text()
    assert "<!-- upscaler:start -->" in text and "| built-in algorithm |" in text
    write_section(tmp_path / "benchmarks.md", "upscaler", "replaced")
    assert (tmp_path / "benchmarks.md").read_text().count("upscaler:start") == 1


def test_a_run_of_some_cases_keeps_the_others_with_the_command_that_measured_them(tmp_path):
    previous = tmp_path / "benchmarks-upscaler.json"
    previous.write_text(json.dumps({"command": "python -m benchmarks.upscaler", "environment": {"date": "d1"},
                                    "cases": [{"case": "rrdb-256-to-2x"}, {"case": "hat-64-to-2x", "old": True}]}))
    fresh = [{"case": "hat-64-to-2x", "command": "python -m benchmarks.upscaler --cases hat-64-to-2x", "date": "d2"}]
    kept = bench.kept_cases(previous, fresh)
    assert [c["case"] for c in kept] == ["rrdb-256-to-2x", "hat-64-to-2x"]
    assert kept[0]["date"] == "d1" and kept[1] == fresh[0]
    assert bench.kept_cases(tmp_path / "none.json", fresh) == fresh


def test_the_seam_score_sees_a_step_at_a_tile_edge_and_nothing_else():
    from benchmarks.lowvram import seam_score, tile_edges

    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 1024, 1024)).astype(np.float32)
    edges = tile_edges(1024)
    assert edges == [0, 448, 576, 1024]  # 2 tiles of 72 latent units per side
    assert seam_score(image, edges, 1) == pytest.approx(1.0, abs=0.1)
    stepped = image.copy()
    stepped[:, :, 448:] += 3.0  # a tile whose tone is off
    assert seam_score(stepped, edges, 2) > 1.5
    assert np.isnan(seam_score(image, [0, 1024], 2))  # one tile: no edges


def test_the_gpu_script_runs_its_smoke_case_anywhere_and_reports_ratios(tmp_path):
    from benchmarks import gpu

    assert gpu.main(["--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "benchmarks-gpu.json").read_text())
    [row] = report["engine"]
    assert row["case"] == "64->256" and row["ratio"] > 0 and row["tflop_per_image"] > 0
    assert "<!-- gpu:start -->" in (tmp_path / "benchmarks.md").read_text()
