"""The page in real Chromium against the real WebUI (tests/e2e/page.mjs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def test_live_hints_snapping_theme_and_a_generation(webui, tmp_path):
    node = shutil.which("node")
    if node is None or not Path(CHROMIUM).exists():
        pytest.skip(f"browser test needs node and Chromium at {CHROMIUM}")
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        pytest.skip("browser test needs playwright-core: run `npm ci` in the repository")
    done = subprocess.run([node, str(ROOT / "tests" / "e2e" / "page.mjs"), webui.url, str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:] + webui.log_tail()
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # the page reads our controls only while they are on screen (txt2img's open accordion)
    assert seen["watching_closed"] == [False, False]
    assert seen["watching_open"] == [True, False]
    assert "Latent upscalers need denoise of at least 0.5" in seen["latent_warning"]
    assert seen["snapped_width"] == "1024"
    assert seen["size_preview"].endswith("→ 1024x1024")
    assert seen["dark"] is True
    assert seen["gallery_size"] == [128, 128]
    docs = os.environ.get("HIRES_UPSCALE_SCREENSHOTS")
    if docs:  # refresh the screenshots in docs/ on request
        for picture in tmp_path.glob("*.png"):
            shutil.copy(picture, Path(docs) / picture.name)
