"""Fixtures that build what the tests need: random-weight models, PNGs with WebUI text."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from PIL import PngImagePlugin

sys.path.insert(0, str(Path(__file__).parent))
# The engine remembers its probes across sessions (calibration.cache_file): each test run starts afresh.
os.environ["HIRES_UPSCALE_CACHE"] = tempfile.mkdtemp(prefix="hires-upscale-test-cache-")

import models  # noqa: E402
import reliability  # noqa: E402
from pictures import noise_image  # noqa: E402, F401 - tests import it from here

#: Set to 1 to run the opt-in tests too (README, "Tests": what they are and why they are not in CI's run).
ALL_TESTS = "HIRES_UPSCALE_ALL_TESTS"


def pytest_configure(config: pytest.Config) -> None:
    # docs/reliability.md is written from the @pytest.mark.reliability tests of the run (tests/reliability.py)
    reliability.register(config)
    config.addinivalue_line("markers", "opt_in(why, hosts=()): run only with HIRES_UPSCALE_ALL_TESTS=1 (on those "
                                       "WebUI hosts, or everywhere); the skip says why")
    config.addinivalue_line("markers", "smoke: runs on a smoke-only WebUI host (Forge Neo) by default; its other "
                                       f"tests only with {ALL_TESTS}=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(ALL_TESTS) == "1":
        return
    for item in items:
        marker = item.get_closest_marker("opt_in")
        if marker is None:
            continue
        hosts = marker.kwargs.get("hosts", ())
        callspec = getattr(item, "callspec", None)
        if hosts and (callspec is None or callspec.params.get("webui") not in hosts):
            continue
        item.add_marker(pytest.mark.skip(reason=f"opt-in ({ALL_TESTS}=1): {marker.args[0]}"))


# Hypothesis's per-example deadline is a timed assertion, and this machine is
# shared and noisy: speed belongs in benchmarks/, not in the tests.
settings.register_profile("hires-upscale", deadline=None, print_blob=True)
settings.load_profile("hires-upscale")

PARAMETERS = (
    "a lighthouse at dusk, <lora:film:0.6>\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 96x64, "
    'Model: sd15, Lora hashes: "film: abc123", Version: v1.10.1'
)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def rrdb_small(model_dir: Path) -> Path:
    """A small RRDB 4x (ESRGAN architecture, 2 blocks of 16 features): quick to run."""
    return models.save_pth(models.rrdb(4, filters=16, blocks=2), model_dir / "rrdb-small-4x.pth")


@pytest.fixture(scope="session")
def rrdb_full(model_dir: Path) -> Path:
    """The full-size RRDB 4x (23 blocks, 64 features), as 4x-UltraSharp and Remacri are."""
    return models.save_pth(models.rrdb(4), model_dir / "rrdb-full-4x.pth")


@pytest.fixture(scope="session")
def compact_2x(model_dir: Path) -> Path:
    return models.save_pth(models.compact(2), model_dir / "compact-2x.pth")


@pytest.fixture(scope="session")
def compact_4x_safetensors(model_dir: Path) -> Path:
    return models.save_safetensors(models.compact(4), model_dir / "compact-4x.safetensors")


@pytest.fixture
def webui_png(tmp_path: Path) -> Path:
    """A 96x64 PNG carrying the WebUI's "parameters" text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", PARAMETERS)
    path = tmp_path / "inputs" / "lighthouse.png"
    path.parent.mkdir()
    noise_image(96, 64).save(path, pnginfo=info)
    return path
