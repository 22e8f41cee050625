"""The command line, run as a user runs it: a real process on real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PARAMETERS, noise_image
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "hires_upscale", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_lanczos_2x_by_default_keeps_the_webui_text(webui_png, tmp_path):
    out = tmp_path / "out"
    done = run_cli("upscale", webui_png, "-o", out)
    assert done.returncode == 0, done.stderr
    with Image.open(out / "lighthouse.png") as result:
        assert result.size == (192, 128)
        assert result.text["parameters"] == PARAMETERS
        assert "model: Lanczos" in result.text["hires-upscale"]
    assert "96x64 ->" in done.stdout and "192x128" in done.stdout


def test_full_size_rrdb_to_an_exact_size(webui_png, rrdb_full, tmp_path):
    out = tmp_path / "out"
    done = run_cli("upscale", webui_png, "--model", rrdb_full, "--width", 200, "--height", 150,
                   "--fit", "stretch", "--sharpen", 0.3, "-o", out)
    assert done.returncode == 0, done.stderr
    with Image.open(out / "lighthouse.png") as result:
        assert result.size == (200, 150)
        assert result.text["parameters"] == PARAMETERS
        assert "model: rrdb-full-4x" in result.text["hires-upscale"]
    with Image.open(webui_png) as source:
        lanczos = source.convert("RGB").resize((200, 150), Image.Resampling.LANCZOS)
    assert Image.open(out / "lighthouse.png").convert("RGB").tobytes() != lanczos.tobytes()


def test_scale_with_a_model(webui_png, rrdb_small, tmp_path):
    done = run_cli("upscale", webui_png, "--model", rrdb_small, "--scale", 2, "-o", tmp_path)
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "lighthouse.png").size == (192, 128)


def test_tile_size_precision_and_device_are_what_the_model_runs_with(webui_png, rrdb_small, tmp_path):
    from hires_upscale.infotext import parse_fields
    from hires_upscale.upscaler import load_model

    done = run_cli("upscale", webui_png, "--model", rrdb_small, "--tile-size", 32, "--precision", "fp32",
                   "--device", "cpu", "-o", tmp_path / "flags")
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "flags" / "lighthouse.png") as result:
        facts = parse_fields(result.text["hires-upscale"])
        made = result.convert("RGB")
    assert (facts["tile"], facts["precision"], facts["device"]) == ("32", "float32", "cpu")
    source = Image.open(webui_png).convert("RGB")
    same = load_model(rrdb_small, device="cpu", precision="fp32", tile_size=32).upscale(source, (192, 128))
    assert made.tobytes() == same.tobytes()  # exactly the engine with those settings
    whole = load_model(rrdb_small, device="cpu", precision="fp32", tile_size=96).upscale(source, (192, 128))
    assert made.tobytes() != whole.tobytes()  # and the tiles are not the whole frame


@pytest.mark.parametrize("fit", ["crop", "fill", "stretch"])
def test_fit_shapes_a_size_of_another_aspect(webui_png, tmp_path, fit):
    from hires_upscale.params import HiresParams
    from hires_upscale.pipeline import Pipeline
    from hires_upscale.upscaler import resolve_upscaler

    done = run_cli("upscale", webui_png, "--width", 160, "--height", 160, "--fit", fit, "-o", tmp_path)
    assert done.returncode == 0, done.stderr
    made = Image.open(tmp_path / "lighthouse.png").convert("RGB")
    params = HiresParams(enabled=True, upscaler="Lanczos", denoise=0, resize_mode="size", width=160, height=160,
                         fit=fit)
    expected = Pipeline(resolve_upscaler, snap_multiple=1).run(Image.open(webui_png).convert("RGB"), params).image
    assert made.size == (160, 160) and made.tobytes() == expected.convert("RGB").tobytes()
    others = {other: Pipeline(resolve_upscaler, snap_multiple=1).run(
        Image.open(webui_png).convert("RGB"), HiresParams(**{**params.__dict__, "fit": other})).image.tobytes()
        for other in ("crop", "fill", "stretch") if other != fit}
    assert all(made.tobytes() != other for other in others.values())  # each fit is its own picture


@pytest.mark.reliability(area="CLI", tried="a corrupt model file",
                         expected="exit 1, the file named, no traceback, no output")
def test_a_corrupt_model_is_refused_by_name(webui_png, tmp_path):
    broken = tmp_path / "4x-Corrupt.pth"
    broken.write_bytes(b"PK\x03\x04 this is not a model")
    done = run_cli("upscale", webui_png, "--model", broken, "-o", tmp_path / "out")
    assert done.returncode == 1
    assert "cannot use 4x-Corrupt.pth as an upscaler" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "lighthouse.png").exists()


@pytest.mark.reliability(area="CLI", tried="an existing output file",
                         expected="skipped; replaced only with --overwrite")
def test_existing_outputs_are_skipped_then_replaced_only_when_asked(webui_png, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "lighthouse.png").write_bytes(b"precious")
    skipped = run_cli("upscale", webui_png, "-o", out)
    assert skipped.returncode == 0 and "skip" in skipped.stdout
    assert (out / "lighthouse.png").read_bytes() == b"precious"
    replaced = run_cli("upscale", webui_png, "-o", out, "--overwrite")
    assert replaced.returncode == 0
    assert Image.open(out / "lighthouse.png").size == (192, 128)
    assert sorted(p.name for p in out.iterdir()) == ["lighthouse.png"]


@pytest.mark.reliability(area="CLI", tried="-o the input's own folder with --overwrite",
                         expected="exit 2, the input untouched")
def test_never_writes_over_its_input(webui_png):
    before = webui_png.read_bytes()
    done = run_cli("upscale", webui_png, "-o", webui_png.parent, "--overwrite")
    assert done.returncode == 2 and "would replace its input" in done.stderr
    assert webui_png.read_bytes() == before


@pytest.mark.reliability(area="CLI", tried="a non-image among the images of a folder",
                         expected="the others done, that file named, exit 1")
def test_folders_and_bad_files_in_a_batch(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    noise_image(30, 20).save(folder / "a.png")
    noise_image(20, 30).save(folder / "b.jpg")
    (folder / "c.png").write_bytes(b"not an image")
    done = run_cli("upscale", folder, "--width", 64, "-o", tmp_path / "out")
    assert done.returncode == 1
    assert "c.png" in done.stderr and "Traceback" not in done.stderr
    assert Image.open(tmp_path / "out" / "a.png").size == (64, 43)
    assert Image.open(tmp_path / "out" / "b.png").size == (64, 96)


@pytest.mark.parametrize("args, message", [
    (["--scale", "9"], "scale: 9.0 is not allowed"),
    (["--scale", "2", "--width", "100"], "either --scale or --width/--height"),
    (["--sharpen", "3"], "sharpen_strength"),
])
@pytest.mark.reliability(area="CLI", tried="scale 9, --scale with --width, sharpen 3",
                         expected="exit 2 saying what is allowed")
def test_bad_options_say_what_is_allowed(webui_png, tmp_path, args, message):
    done = run_cli("upscale", webui_png, "-o", tmp_path, *args)
    assert done.returncode == 2 and message in done.stderr


def test_inputs_with_the_same_name_are_refused(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        noise_image(8, 8).save(tmp_path / sub / "same.png")
    done = run_cli("upscale", tmp_path / "x" / "same.png", tmp_path / "y" / "same.png", "-o", tmp_path / "out")
    assert done.returncode == 2 and "would both write" in done.stderr


@pytest.mark.reliability(area="CLI", tried="SIGKILL in the middle of a batch, then a rerun",
                         expected="only whole outputs; the rerun skips them and finishes; no leftovers")
def test_a_killed_batch_resumes_with_every_output_whole(tmp_path, rrdb_full):
    import signal
    import time

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for index in range(4):
        noise_image(96, 96, seed=index).save(folder / f"img{index}.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "hires_upscale", "upscale", str(folder), "--model", str(rrdb_full),
               "-o", str(out)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not list(out.glob("*.png")) and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # in the middle of the batch, mid-write or mid-model
    process.wait()
    first = sorted(p.name for p in out.glob("*.png"))
    assert 1 <= len(first) < 4, "the kill should land in the middle of the batch"
    again = run_cli("upscale", folder, "--model", rrdb_full, "-o", out)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skip") == len(first)
    assert sorted(p.name for p in out.iterdir()) == [f"img{i}.png" for i in range(4)]  # no leftovers
    for index in range(4):
        with Image.open(out / f"img{index}.png") as result:
            result.load()  # complete files only
            assert result.size == (192, 192)


@pytest.mark.reliability(area="CLI", tried="a PNG with text over Pillow's limits and an animated GIF",
                         expected="both upscaled, a warning/info line for each on stderr")
def test_what_an_input_loses_is_said(tmp_path):
    from PIL import PngImagePlugin

    folder = tmp_path / "in"
    folder.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "x" * (PngImagePlugin.MAX_TEXT_CHUNK + 1), zip=True)  # over Pillow's limit
    noise_image(24, 16).save(folder / "huge.png", pnginfo=info)
    frames = [noise_image(16, 16, seed=i) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    done = run_cli("upscale", folder, tmp_path / "anim.gif", "-o", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"warning: {folder / 'huge.png'}: Its PNG text 'parameters'" in done.stderr
    assert "cannot be recovered" in done.stderr
    assert f"info: {tmp_path / 'anim.gif'}: The file has 3 frames; only the first is upscaled." in done.stderr
    with Image.open(tmp_path / "out" / "huge.png") as result:
        assert result.size == (48, 32) and "parameters" not in result.text and "hires-upscale" in result.text


@pytest.mark.reliability(area="CLI", tried="a JPEG and a WebP the WebUI saved (infotext in EXIF), --format png, same",
                         expected="PNG outputs carry it as 'parameters'; with same, JPEG/WebP back with it in EXIF")
def test_jpeg_and_webp_keep_their_generation_info_in_either_output_format(tmp_path):
    from hires_upscale.images import open_image, record_of
    from hires_upscale.metadata import read_generation

    exif = Image.Exif()
    exif[0x8769] = {0x9286: b"UNICODE\0" + PARAMETERS.encode("utf-16-be")}
    for suffix in ("jpg", "webp"):
        noise_image(48, 32).save(tmp_path / f"made.{suffix}", exif=exif, quality=95)
    for suffix in ("jpg", "webp"):
        done = run_cli("upscale", tmp_path / f"made.{suffix}", "-o", tmp_path / suffix)
        assert done.returncode == 0, done.stderr
        with Image.open(tmp_path / suffix / "made.png") as result:
            assert result.text["parameters"] == PARAMETERS
    done = run_cli("upscale", tmp_path / "made.jpg", tmp_path / "made.webp", "--format", "same",
                   "-o", tmp_path / "same")
    assert done.returncode == 0, done.stderr
    for name, fmt in (("made.jpg", "JPEG"), ("made.webp", "WEBP")):
        image = open_image(tmp_path / "same" / name)
        assert image.size == (96, 64) and Image.open(tmp_path / "same" / name).format == fmt
        found = read_generation(record_of(image))
        assert (found.source, found.info.seed) == ("EXIF UserComment", 1234)
