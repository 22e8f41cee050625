"""The Hires upscale tab in Chromium on each host, as a person uses it: files dropped and run twice
(the second run's names get -1), a folder upscaled, one of its outputs removed and the rerun
interrupted (nothing half-done is written), then resumed (only the missing one is done again)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from harness import decode
from PIL import Image, PngImagePlugin
from test_webui import txt2img

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def made(webui, folder: Path, name: str, seed: int) -> Path:
    result = txt2img(webui, seed=seed)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", json.loads(result["info"])["infotexts"][0])
    folder.mkdir(parents=True, exist_ok=True)
    decode(result["images"][0]).save(folder / name, pnginfo=info)
    return folder / name


@pytest.mark.reliability(area="WebUI", tried="the tab in Chromium: two files dropped and run twice, a folder run, "
                         "one output removed and the rerun interrupted, then resumed",
                         expected="outputs named a.png, then a-1.png; the interrupted image not written; the "
                         "resumed run does only the missing one, the others said skipped")
def test_the_tab_drops_runs_names_interrupts_and_resumes(webui, tmp_path):
    node = shutil.which("node")
    if node is None or not Path(CHROMIUM).exists():
        pytest.skip(f"browser test needs node and Chromium at {CHROMIUM}")
    dropped = [made(webui, tmp_path / "dropped", f"{name}.png", seed) for name, seed in (("a", 11), ("b", 12))]
    source = webui.data_dir / "outputs" / "tab-folder-in"
    target = webui.data_dir / "outputs" / "tab-folder-out"
    shutil.rmtree(source, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    for name, seed in (("c", 21), ("d", 22), ("e", 23)):
        made(webui, source, f"{name}.png", seed)
    drops = webui.data_dir / "outputs" / "hires-upscale"
    fast = {"denoise": 0, "steps": 1}
    folder = {"files": [], "folder": str(source), "output": str(target)}
    runs = [{"files": [str(p) for p in dropped], **fast}, {"files": [str(p) for p in dropped], **fast},
            {**folder, "reload": True, **fast}, {**folder, "denoise": 0.3, "steps": 2}, {**folder, **fast}]
    page = subprocess.Popen([node, str(ROOT / "tests" / "e2e" / "tab.mjs"), webui.url, str(tmp_path),
                             json.dumps(runs)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for index in range(len(runs)):
            wait_for(lambda index=index: _ready(tmp_path) == index, page)
            if index == 3:  # remove one output, and have its rerun interrupted in its second pass
                (target / "d.png").unlink()
                webui.inject({"kind": "interrupt", "stage": "sampling", "min_pixels": 128 * 128})
            if index == 4:  # before the resumed run writes it again
                assert webui.faults_left() == [], "the interrupt fired in run 3"
                assert not (target / "d.png").exists(), "the interrupted image was written"
            (tmp_path / f"go-{index}").write_text("")
        out, err = page.communicate(timeout=900)
    finally:
        if page.poll() is None:
            page.kill()
        webui.inject()
    assert page.returncode == 0, out[-3000:] + err[-5000:] + webui.log_tail()
    seen = json.loads(out.strip().splitlines()[-1])["runs"]

    def notes(run: int) -> dict[str, str]:
        return {row[0]: row[-1] for row in seen[run]["rows"]}

    assert notes(0) == {"a.png": f"saved {drops / 'a.png'}", "b.png": f"saved {drops / 'b.png'}"}
    assert notes(1) == {"a.png": f"saved {drops / 'a-1.png'}", "b.png": f"saved {drops / 'b-1.png'}"}
    assert all(Image.open(drops / name).size == (128, 128) for name in ("a.png", "a-1.png", "b.png", "b-1.png"))
    assert seen[0]["gallery"] >= 2
    assert notes(2) == {name: f"saved {target / name}" for name in ("c.png", "d.png", "e.png")}
    interrupted = notes(3)
    assert interrupted["d.png"].startswith("interrupted; not saved"), interrupted
    assert "already done" in interrupted["c.png"] and "e.png" not in interrupted, interrupted  # the run stopped at d
    resumed = notes(4)
    assert resumed["d.png"] == f"saved {target / 'd.png'}", resumed
    assert all("already done" in resumed[name] for name in ("c.png", "e.png")), resumed
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith(".")) == ["c.png", "d.png", "e.png"]


def _ready(folder: Path) -> int | None:
    try:
        return json.loads((folder / "progress.json").read_text())["ready"]
    except (OSError, ValueError, KeyError):
        return None


def wait_for(condition, page: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if page.poll() is not None:
            out, err = page.stdout.read(), page.stderr.read()
            raise AssertionError(f"the page script ended early: {out[-2000:]} {err[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("the page script did not get there in time")
        time.sleep(0.25)
