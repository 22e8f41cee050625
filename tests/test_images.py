from __future__ import annotations

import os
import stat

import pytest
from conftest import PARAMETERS, noise_image
from PIL import Image, PngImagePlugin

from hires_upscale.errors import ImageLoadError, OutputExistsError
from hires_upscale.images import open_image, save_png, text_chunks


def test_text_chunks_survive_a_save(webui_png, tmp_path):
    image = open_image(webui_png)
    assert text_chunks(image)["parameters"] == PARAMETERS
    out = save_png(image, tmp_path / "out.png", text={**text_chunks(image), "note": "naïve ✓"})
    with Image.open(out) as saved:
        assert saved.text["parameters"] == PARAMETERS and saved.text["note"] == "naïve ✓"


@pytest.mark.reliability(area="Files", tried="writing over an existing file",
                         expected="refused unless overwrite; no temporary file left")
def test_never_replaces_a_file_unless_asked(tmp_path):
    target = tmp_path / "x.png"
    target.write_bytes(b"user data")
    with pytest.raises(OutputExistsError, match="x.png already exists"):
        save_png(noise_image(8, 8), target)
    assert target.read_bytes() == b"user data"
    save_png(noise_image(8, 8), target, overwrite=True)
    assert Image.open(target).size == (8, 8)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary file left behind


@pytest.mark.reliability(area="Images", tried="palette, 16-bit, CMYK and EXIF-rotated inputs",
                         expected="read as 8-bit RGB/L, upright")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        written = save_png(noise_image(8, 8), tmp_path / "out.png")
    finally:
        os.umask(before)
    assert stat.S_IMODE(written.stat().st_mode) == mode


def test_a_save_leaves_other_writers_temporary_files_alone(tmp_path):
    theirs = tmp_path / ".x.png.0123abcd.tmp"  # another process writing x.png right now
    theirs.write_bytes(b"half")
    save_png(noise_image(8, 8), tmp_path / "x.png")
    assert theirs.read_bytes() == b"half"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.png.0123abcd.tmp", "x.png"]


def test_modes_and_orientation(tmp_path):
    palette = noise_image(10, 10).convert("P")
    palette.save(tmp_path / "p.png")
    assert open_image(tmp_path / "p.png").mode == "RGB"
    deep = Image.new("I;16", (4, 4), 65535)
    deep.save(tmp_path / "deep.png")
    assert open_image(tmp_path / "deep.png").getpixel((0, 0)) == 255
    cmyk = noise_image(6, 6).convert("CMYK")
    cmyk.save(tmp_path / "c.jpg")
    assert open_image(tmp_path / "c.jpg").mode == "RGB"
    rotated = noise_image(20, 10)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated.save(tmp_path / "r.jpg", exif=exif)
    assert open_image(tmp_path / "r.jpg").size == (10, 20)


@pytest.mark.reliability(area="Images", tried="a garbage PNG and a missing file",
                         expected="ImageLoadError naming the file")
def test_unreadable_files_are_named(tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageLoadError, match="not-an-image.png"):
        open_image(bad)
    with pytest.raises(ImageLoadError, match="missing.png"):
        open_image(tmp_path / "missing.png")


def test_itxt_chunks_are_read(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", "un chat, été")
    noise_image(4, 4).save(tmp_path / "i.png", pnginfo=info)
    assert text_chunks(open_image(tmp_path / "i.png"))["parameters"] == "un chat, été"


@pytest.mark.reliability(area="Images", tried="data: URLs, invalid base64, base64 of no image, too many pixels",
                         expected="read, or ImageLoadError saying why")
def test_base64_images_and_their_limits(monkeypatch):
    import base64
    import io

    from hires_upscale import images

    buffer = io.BytesIO()
    noise_image(12, 8).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    assert images.decode_base64_image(data).size == (12, 8)
    assert images.decode_base64_image("data:image/png;base64," + data).size == (12, 8)
    with pytest.raises(ImageLoadError, match="not valid base64"):
        images.decode_base64_image("%%%")
    with pytest.raises(ImageLoadError):
        images.decode_base64_image(base64.b64encode(b"hello").decode())
    monkeypatch.setattr(images, "MAX_INPUT_PIXELS", 50)
    with pytest.raises(ImageLoadError, match="12x8 is more than the 50 pixels allowed"):
        images.decode_base64_image(data)


@pytest.mark.reliability(area="Images", tried="a PNG over the pixel limit",
                         expected="refused from its header, before decoding")
def test_decompression_bombs_are_refused_before_decoding(tmp_path, monkeypatch):
    from hires_upscale import images

    # A PNG whose header claims more pixels than allowed: refused from the header alone.
    noise_image(64, 64).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_INPUT_PIXELS", 64 * 63)
    with pytest.raises(ImageLoadError, match="64x64 is more than"):
        open_image(tmp_path / "big.png")


@pytest.mark.reliability(area="Images", tried="a truncated PNG, an animated GIF, an LA image",
                         expected="named error; first frame; alpha kept")
def test_truncated_animated_and_alpha_images(tmp_path):
    noise_image(40, 40).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="cut.png"):
        open_image(tmp_path / "cut.png")
    frames = [noise_image(16, 16, seed=i) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    first = open_image(tmp_path / "anim.gif")
    assert first.size == (16, 16) and first.mode == "RGB"
    la = noise_image(8, 8).convert("LA")
    la.save(tmp_path / "la.png")
    assert open_image(tmp_path / "la.png").mode == "LA"  # alpha kept; the upscaler resizes it apart


# -- what a file holds that the image does not keep: said, never a raw Pillow error --------------

def png_with_text(path, chunks: list[tuple[str, str, bool]]):
    """A PNG whose text chunks are (keyword, text, compressed)."""
    info = PngImagePlugin.PngInfo()
    for key, value, compressed in chunks:
        info.add_text(key, value, zip=compressed)
    noise_image(24, 16).save(path, pnginfo=info)
    return path


@pytest.mark.reliability(area="Images", tried="a PNG whose compressed 'parameters' text is over PIL's MAX_TEXT_CHUNK "
                         "(Pillow refuses the file)",
                         expected="pixels read, text dropped, a 'text_dropped' warning saying the prompt is lost")
def test_text_over_pillows_chunk_limit_is_dropped_and_the_pixels_kept(tmp_path):
    from hires_upscale.images import notices

    huge = "a lighthouse, " * (PngImagePlugin.MAX_TEXT_CHUNK // 14 + 10)  # over 1 MB once decompressed
    path = png_with_text(tmp_path / "huge.png", [("note", "kept", False), ("parameters", huge, True)])
    with pytest.raises(ValueError), Image.open(path) as raw:  # Pillow alone refuses the whole file
        raw.load()
    image = open_image(path)
    assert image.size == (24, 16) and image.tobytes() == noise_image(24, 16).tobytes()
    assert "parameters" not in text_chunks(image) and text_chunks(image)["note"] == "kept"
    [notice] = notices(image)
    assert (notice.code, notice.level, notice.field) == ("text_dropped", "warning", "image")
    assert notice.message.startswith("Its PNG text 'parameters' (more than 1,048,576 bytes")
    assert "cannot be recovered" in notice.message


@pytest.mark.reliability(area="Images", tried="PNG text chunks over PIL's MAX_TEXT_MEMORY in all (limit lowered)",
                         expected="the chunks within the limit kept, the rest dropped and told")
def test_text_over_pillows_memory_limit_is_dropped_and_the_rest_kept(tmp_path, monkeypatch):
    from hires_upscale.images import notices

    # MAX_TEXT_MEMORY is 64 MB; the same rule at a small limit keeps the test light.
    monkeypatch.setattr(PngImagePlugin, "MAX_TEXT_MEMORY", 1000)
    path = png_with_text(tmp_path / "many.png", [("parameters", "p" * 600, False), ("extra", "e" * 600, False)])
    with pytest.raises(ValueError, match="MAX_TEXT_MEMORY"), Image.open(path) as raw:
        raw.load()
    image = open_image(path)
    assert text_chunks(image) == {"parameters": "p" * 600}
    assert [n.code for n in notices(image)] == ["text_dropped"] and "'extra' (600 characters)" in \
        notices(image)[0].message


@pytest.mark.reliability(area="Images", tried="a 200 KB non-ASCII prompt, plain and compressed",
                         expected="read and written back unchanged")
def test_a_large_but_allowed_prompt_round_trips(tmp_path):
    prompt = ("a lighthouse at dusk, été, <lora:film:0.6>, " * 5000)[:200_000]  # 200 KB, not ASCII
    text = f"{prompt}\nNegative prompt: blurry\nSteps: 20, Seed: 1, Size: 24x16"
    for compressed in (False, True):
        path = png_with_text(tmp_path / f"long-{compressed}.png", [("parameters", text, compressed)])
        image = open_image(path)
        assert text_chunks(image)["parameters"] == text
        out = save_png(image, tmp_path / f"out-{compressed}.png", text=text_chunks(image))
        assert text_chunks(open_image(out))["parameters"] == text


@pytest.mark.parametrize("suffix, options", [
    ("gif", {}),
    ("png", {}),  # APNG
    ("webp", {"lossless": True}),
])
@pytest.mark.reliability(area="Images", tried="3-frame GIF, APNG and WebP animations",
                         expected="the first frame, with a 'first_frame' notice; stills have none")
def test_animations_give_their_first_frame_and_say_so(tmp_path, suffix, options):
    from hires_upscale.images import notices

    frames = [noise_image(16, 12, seed=i) for i in range(3)]
    path = tmp_path / f"anim.{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, **options)
    image = open_image(path)
    assert image.size == (16, 12)
    if suffix != "gif":  # GIF's palette changes pixels; the others are exact
        assert image.convert("RGB").tobytes() == frames[0].tobytes()
    [notice] = notices(image)
    assert notice.code == "first_frame" and notice.message == "The file has 3 frames; only the first is upscaled."
    frames[0].save(tmp_path / f"still.{suffix}", **options)
    assert notices(open_image(tmp_path / f"still.{suffix}")) == []


def test_a_jpeg_that_cannot_hold_the_generation_info_is_written_as_png(tmp_path):
    from hires_upscale.images import save_image

    picture = noise_image(32, 32)
    short = save_image(picture, tmp_path / "short.jpg", text={"parameters": PARAMETERS})
    assert short.suffix == ".jpg"
    long_text = "a lighthouse, " * 2500 + "\nSteps: 20, Seed: 1"  # 35,000 characters: over a JPEG's 64 KiB EXIF
    written = save_image(picture, tmp_path / "long.jpg", text={"parameters": long_text})
    assert written == tmp_path / "long.png" and not (tmp_path / "long.jpg").exists()
    with Image.open(written) as kept:
        assert kept.format == "PNG" and kept.text["parameters"] == long_text
