"""Generation info read the way each tool writes it: files built here in each tool's layout (its own
writing code, read for the layout: the WebUI's images.save_image_with_geninfo, ComfyUI's SaveImage,
NovelAI's PNG text, InvokeAI's invokeai_metadata, Fooocus's meta_parser, SwarmUI's metadata doc),
then opened like any picture a user brings."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image, PngImagePlugin

from hires_upscale.images import decode_base64_image, notices, record_of, source_format
from hires_upscale.metadata import Record, decode_user_comment, read_generation

INFOTEXT = ("a lighthouse at dusk, <lora:film:0.6>\nNegative prompt: blurry\n"
            "Steps: 24, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 64x48, "
            "Model: dreamshaper_8")


def opened(fmt: str = "PNG", *, text: dict[str, str] | None = None, exif: Image.Exif | None = None,
           mode: str = "RGB", **save) -> Image.Image:
    """A 64x48 picture saved as `fmt` with these PNG texts or EXIF, then opened as the API opens one."""
    image = Image.new(mode, (64, 48), "red" if mode != "CMYK" else (0, 255, 255, 0))
    buffer = io.BytesIO()
    if text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_itxt(key, value) if not value.isascii() else info.add_text(key, value)
        save["pnginfo"] = info
    if exif is not None:
        save["exif"] = exif
    image.save(buffer, fmt, **save)
    return decode_base64_image(base64.b64encode(buffer.getvalue()).decode())


def webui_exif(text: str) -> Image.Exif:
    """The WebUI's JPEG/WebP/AVIF record: the Exif IFD's UserComment, piexif's "unicode" (UTF-16-BE)."""
    exif = Image.Exif()
    exif[0x8769] = {0x9286: b"UNICODE\0" + text.encode("utf-16-be")}
    return exif


def read(image: Image.Image):
    return read_generation(record_of(image))


@pytest.mark.parametrize("fmt, how", [("PNG", "text"), ("JPEG", "exif"), ("WEBP", "exif")])
def test_the_webuis_own_record_in_png_jpeg_and_webp(fmt, how):
    image = opened(fmt, text={"parameters": INFOTEXT} if how == "text" else None,
                   exif=webui_exif(INFOTEXT) if how == "exif" else None)
    found = read(image)
    where = "PNG text 'parameters'" if how == "text" else "EXIF UserComment"
    assert (found.tool, found.source) == ("A1111/Forge", where)
    info = found.info
    assert info.prompt == "a lighthouse at dusk, <lora:film:0.6>" and info.negative_prompt == "blurry"
    assert (info.seed, info.steps, info.cfg_scale, info.fields["Schedule type"]) == (1234, 24, 6.5, "Karras")
    assert source_format(image) == fmt


def test_user_comments_in_every_character_code():
    text = "a cat, ünïcode ✓"
    assert decode_user_comment(b"UNICODE\0" + text.encode("utf-16-be")) == text
    assert decode_user_comment(b"UNICODE\0" + text.encode("utf-16-le")) == text  # some writers
    assert decode_user_comment(b"ASCII\0\0\0a cat") == "a cat"
    assert decode_user_comment(b"\0" * 8 + "a cät".encode()) == "a cät"
    assert decode_user_comment("Fooocus writes a str") == "Fooocus writes a str"
    assert decode_user_comment(b"UNICODE\0") is None and decode_user_comment(None) is None


def test_novelai():
    comment = {"prompt": "1girl, masterpiece", "steps": 28, "height": 48, "width": 64, "scale": 5.0,
               "uncond_scale": 1.0, "cfg_rescale": 0.0, "seed": 3141592, "n_samples": 1, "noise_schedule": "native",
               "sampler": "k_euler_ancestral", "uc": "lowres, bad anatomy"}
    found = read(opened(text={"Title": "AI generated image", "Description": "1girl, masterpiece", "Software": "NovelAI",
                              "Source": "NovelAI Diffusion V4", "Comment": json.dumps(comment)}))
    assert (found.tool, found.info.prompt, found.info.negative_prompt) == ("NovelAI", "1girl, masterpiece",
                                                                           "lowres, bad anatomy")
    assert found.info.fields == {"Steps": "28", "Sampler": "Euler a", "CFG scale": "5.0", "Seed": "3141592",
                                 "Size": "64x48"}


def comfy_graph(samplers: int = 1) -> dict:
    """ComfyUI's default txt2img graph as its SaveImage writes it (the API form: node id -> class and inputs),
    with a second, hires-fix sampler when asked."""
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a bottle with a galaxy inside", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
                                                   "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    if samplers == 2:  # a hires pass: its own prompt through a ControlNet, its image saved
        graph["10"] = {"class_type": "LatentUpscale", "inputs": {"samples": ["3", 0], "upscale_method": "nearest-exact",
                                                                 "width": 1024, "height": 1024, "crop": "disabled"}}
        graph["11"] = {"class_type": "CLIPTextEncode", "inputs": {"text": ["13", 0], "clip": ["4", 1]}}
        graph["13"] = {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a bottle, sharp details"}}
        graph["14"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["11", 0], "negative": ["7", 0], "control_net": ["15", 0], "image": ["16", 0],
            "strength": 0.5}}
        graph["12"] = {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 14, "cfg": 7,
                                                            "sampler_name": "dpmpp_2m", "scheduler": "karras",
                                                            "denoise": 0.5, "model": ["4", 0], "positive": ["14", 0],
                                                            "negative": ["14", 1], "latent_image": ["10", 0]}}
        graph["8"]["inputs"]["samples"] = ["12", 0]
    return graph


def test_comfyui_follows_the_sampler_to_its_text_nodes():
    found = read(opened(text={"prompt": json.dumps(comfy_graph()), "workflow": json.dumps({"nodes": []})}))
    assert (found.tool, found.source) == ("ComfyUI", "the ComfyUI graph, node 6")
    assert (found.info.prompt, found.info.negative_prompt) == ("a bottle with a galaxy inside", "text, watermark")
    assert found.info.fields == {"Steps": "20", "Sampler": "Euler", "Schedule type": "Automatic", "CFG scale": "8",
                                 "Seed": "156680208700286", "Model": "v1-5-pruned-emaonly.safetensors"}
    assert found.notes == ()


def test_comfyui_with_two_samplers_says_which_prompt_it_took():
    found = read(opened(text={"prompt": json.dumps(comfy_graph(samplers=2))}))
    assert found.info.prompt == "a bottle, sharp details"  # through a string node and a ControlNet apply
    assert found.info.negative_prompt == "text, watermark"  # the ControlNet's slot 1
    assert found.source == "the ComfyUI graph, node 13"
    assert found.info.fields["Seed"] == "42" and found.info.fields["Schedule type"] == "Karras"
    assert found.notes == ("the ComfyUI graph has 2 samplers (nodes 3, 12); the prompt of node 12, whose image was "
                           "saved, was taken",)


def test_invokeai():
    metadata = {"generation_mode": "txt2img", "positive_prompt": "a castle", "negative_prompt": "fog", "width": 64,
                "height": 48, "seed": 987, "rand_device": "cpu", "cfg_scale": 7.5, "cfg_rescale_multiplier": 0,
                "steps": 30, "scheduler": "dpmpp_2m_k", "model": {"name": "juggernaut", "base": "sdxl"}}
    found = read(opened(text={"invokeai_metadata": json.dumps(metadata), "invokeai_graph": "{}"}))
    assert (found.tool, found.info.prompt, found.info.negative_prompt) == ("InvokeAI", "a castle", "fog")
    assert found.info.fields == {"Steps": "30", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "7.5",
                                 "Seed": "987", "Size": "64x48", "Model": "juggernaut"}


def fooocus_record() -> dict:
    return {"prompt": "a fox", "negative_prompt": "", "full_prompt": ["a fox", "cinematic still, film grain"],
            "full_negative_prompt": ["anime"], "styles": "['Fooocus V2']", "performance": "Speed", "steps": 30,
            "resolution": "(64, 48)", "guidance_scale": 4, "sharpness": 2, "sampler": "dpmpp_2m_sde_gpu",
            "scheduler": "karras", "base_model": "juggernautXL_v8Rundiffusion", "seed": "7305",
            "version": "Fooocus v2.5.5"}


def test_fooocus_in_png_and_in_jpeg():
    png = read(opened(text={"parameters": json.dumps(fooocus_record()), "fooocus_scheme": "fooocus"}))
    exif = Image.Exif()  # Fooocus's get_exif: UserComment, Software and MakerNote on the first IFD
    exif[0x9286] = json.dumps(fooocus_record())
    exif[0x0131] = "Fooocus v2.5.5"
    exif[0x927C] = "fooocus"
    jpeg = read(opened("JPEG", exif=exif))
    for found, where in ((png, "PNG text 'parameters'"), (jpeg, "EXIF UserComment")):
        assert (found.tool, found.source) == ("Fooocus", where)
        assert found.info.prompt == "a fox, cinematic still, film grain" and found.info.negative_prompt == "anime"
        assert found.info.fields == {"Steps": "30", "Sampler": "DPM++ 2M SDE", "Schedule type": "Karras",
                                     "CFG scale": "4", "Seed": "7305", "Size": "64x48",
                                     "Model": "juggernautXL_v8Rundiffusion"}


def test_swarmui_in_png_and_in_jpeg():
    record = {"sui_image_params": {"prompt": "a tram", "negativeprompt": "rain", "model": "Flux/flux1-dev-fp8",
                                   "seed": 305223794, "steps": 25, "cfgscale": 1.0, "width": 64, "height": 48,
                                   "sampler": "euler", "scheduler": "normal", "swarm_version": "0.9.1.1"}}
    text = json.dumps(record, indent=2)
    for image, where in ((opened(text={"parameters": text}), "PNG text 'parameters'"),
                         (opened("JPEG", exif=webui_exif(text)), "EXIF UserComment")):
        found = read(image)
        assert (found.tool, found.source, found.info.prompt, found.info.negative_prompt) == (
            "SwarmUI", where, "a tram", "rain")
        assert found.info.fields["Model"] == "Flux/flux1-dev-fp8" and found.info.fields["CFG scale"] == "1.0"


def test_a_photo_has_no_record_and_a_broken_one_is_said():
    photo = read(opened("JPEG"))
    assert not photo.found and photo.notes == () and photo.text == ""
    broken = read(opened(text={"parameters": '{"prompt": "cut off'}))
    assert not broken.found and broken.notes == ("its PNG text 'parameters' could not be read as generation info",)


def _saved_with_null_inputs() -> dict:
    graph = comfy_graph()
    next(node for node in graph.values() if node["class_type"] == "SaveImage")["inputs"] = None
    return graph


@pytest.mark.parametrize("text", [
    {"Software": "NovelAI", "Comment": "[1]"},  # NovelAI's settings as a list, not an object
    {"prompt": json.dumps(_saved_with_null_inputs())},
    {"prompt": json.dumps({"3": {"class_type": "KSampler", "inputs": [1, 2]}})},
    {"invokeai_metadata": "[]"},
], ids=["novelai-list", "comfyui-null-inputs", "comfyui-list-inputs", "invokeai-list"])
def test_valid_json_of_a_shape_no_tool_writes_is_said_not_a_crash(text):
    broken = read(opened(text=text))  # no AttributeError: the API would answer 500, the tab a traceback
    assert broken.info.prompt == "" and not broken.info.fields and len(broken.notes) == 1, broken


def test_cmyk_and_16_bit_pictures_are_converted_and_said():
    cmyk = opened("JPEG", mode="CMYK")
    assert cmyk.mode == "RGB"
    assert [n.code for n in notices(cmyk)] == ["mode_converted"] and "CMYK" in notices(cmyk)[0].message
    grey = Image.new("I;16", (8, 8), 40000)
    buffer = io.BytesIO()
    grey.save(buffer, "PNG")
    deep = decode_base64_image(base64.b64encode(buffer.getvalue()).decode())
    assert deep.mode == "L" and "16 bits" in notices(deep)[0].message


def test_the_record_is_the_text_alone_for_a_picture_made_in_memory():
    image = Image.new("RGB", (8, 8))
    image.info["parameters"] = INFOTEXT
    assert record_of(image) == Record({"parameters": INFOTEXT}) and read_generation(record_of(image)).found
