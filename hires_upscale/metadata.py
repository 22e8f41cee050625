"""How an image says it was made, read the way each tool writes it.

Every reader turns its tool's record into the WebUI's own terms (`infotext.GenerationInfo`: the
prompts and "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model"), so the
second pass repeats any of them alike. `read_generation` tries the readers in order and says
which tool's record it found, where in the file, and what it had to choose or could not read.

The layouts, as the tools write them:
- A1111, Forge, reForge: PNG text "parameters" (infotext); JPEG, WebP and AVIF: the EXIF
  UserComment, "UNICODE\\0" + UTF-16-BE (piexif's `UserComment.dump(..., encoding="unicode")`);
  GIF: its comment.
- NovelAI: PNG text "Software" = "NovelAI", "Description" (the prompt) and "Comment" (JSON:
  prompt, uc, steps, scale, seed, sampler).
- ComfyUI: PNG text "prompt", the API graph as JSON ({node id: {class_type, inputs}}; an input
  that is a link is [node id, output slot]). The sampler's `positive` and `negative` inputs are
  followed to their text nodes.
- InvokeAI: PNG text "invokeai_metadata" (JSON: positive_prompt, negative_prompt, seed, steps,
  cfg_scale, scheduler, model), or the older "sd-metadata" (JSON: image.prompt, ...).
- Fooocus: PNG text "parameters" as JSON (prompt, negative_prompt, full_prompt, seed, steps,
  guidance_scale, sampler, scheduler, base_model, resolution) with "fooocus_scheme"; JPEG and
  WebP: the same JSON in EXIF UserComment of the first IFD.
- SwarmUI: PNG text "parameters" (JSON: {"sui_image_params": {prompt, negativeprompt, seed,
  steps, cfgscale, sampler, scheduler, model, width, height}}); JPEG: EXIF UserComment.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .infotext import GenerationInfo, format_fields, parse_parameters

#: ComfyUI's (and SwarmUI's, Fooocus's) sampler names -> the WebUI's
COMFY_SAMPLERS = {
    "euler": "Euler", "euler_ancestral": "Euler a", "heun": "Heun", "dpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS", "dpm_fast": "DPM fast", "dpm_adaptive": "DPM adaptive", "dpmpp_2s_ancestral": "DPM++ 2S a",
    "dpmpp_sde": "DPM++ SDE", "dpmpp_sde_gpu": "DPM++ SDE", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_gpu": "DPM++ 2M SDE", "dpmpp_3m_sde": "DPM++ 3M SDE", "dpmpp_3m_sde_gpu": "DPM++ 3M SDE",
    "ddim": "DDIM", "uni_pc": "UniPC", "uni_pc_bh2": "UniPC", "lcm": "LCM", "restart": "Restart",
}
#: ComfyUI's scheduler names -> the WebUI's schedule types (v1.9+)
COMFY_SCHEDULERS = {"normal": "Automatic", "karras": "Karras", "exponential": "Exponential",
                    "sgm_uniform": "SGM Uniform", "simple": "Simple", "ddim_uniform": "Uniform", "beta": "Beta",
                    "kl_optimal": "KL Optimal", "align_your_steps": "Align Your Steps"}
#: NovelAI's sampler names -> the WebUI's
NOVELAI_SAMPLERS = {"k_euler": "Euler", "k_euler_ancestral": "Euler a", "k_dpmpp_2m": "DPM++ 2M",
                    "k_dpmpp_2s_ancestral": "DPM++ 2S a", "k_dpmpp_sde": "DPM++ SDE", "k_dpm_2": "DPM2",
                    "k_dpm_2_ancestral": "DPM2 a", "k_lms": "LMS", "k_heun": "Heun", "ddim": "DDIM",
                    "ddim_v3": "DDIM", "k_dpm_fast": "DPM fast", "k_dpm_adaptive": "DPM adaptive"}
#: InvokeAI's scheduler names -> the WebUI's (sampler, schedule type)
INVOKE_SCHEDULERS = {"euler": ("Euler", None), "euler_a": ("Euler a", None), "euler_k": ("Euler", "Karras"),
                     "heun": ("Heun", None), "heun_k": ("Heun", "Karras"), "lms": ("LMS", None),
                     "lms_k": ("LMS", "Karras"), "ddim": ("DDIM", None), "dpmpp_2m": ("DPM++ 2M", None),
                     "dpmpp_2m_k": ("DPM++ 2M", "Karras"), "dpmpp_2m_sde": ("DPM++ 2M SDE", None),
                     "dpmpp_2m_sde_k": ("DPM++ 2M SDE", "Karras"), "dpmpp_sde": ("DPM++ SDE", None),
                     "dpmpp_sde_k": ("DPM++ SDE", "Karras"), "dpmpp_2s": ("DPM++ 2S a", None),
                     "kdpm_2": ("DPM2", None), "kdpm_2_a": ("DPM2 a", None), "unipc": ("UniPC", None),
                     "lcm": ("LCM", None)}

#: The ComfyUI node inputs that hold a prompt's text, in the order they are joined.
_COMFY_TEXT_INPUTS = ("text", "text_g", "text_l", "clip_l", "t5xxl", "prompt", "string", "value")
#: The inputs a conditioning passes through on its way to the sampler (ControlNet, combine, area...).
_COMFY_CONDITIONING_INPUTS = ("conditioning", "conditioning_1", "conditioning_2", "conditioning_to",
                              "conditioning_from", "clip_conditioning")
#: How far a ComfyUI graph is followed from the sampler to a text.
_COMFY_DEPTH = 12


@dataclass(frozen=True)
class ImageGeneration:
    """What an image says about how it was made, in the WebUI's terms, and where that came from."""

    info: GenerationInfo
    #: the tool whose record it is ("A1111/Forge", "NovelAI", "ComfyUI"...); "" when the image has none
    tool: str = ""
    #: where in the file, in words ("PNG text 'parameters'", "the ComfyUI graph, node 6")
    source: str = ""
    #: what the reader had to choose or could not read, for the result's notes
    notes: tuple[str, ...] = ()
    #: the record's own text where it is WebUI infotext, kept as written
    raw: str = ""

    @property
    def found(self) -> bool:
        return bool(self.tool)

    @property
    def text(self) -> str:
        """The record as WebUI infotext (what an output's "parameters" starts from): as written where
        it was infotext, else made from what was read."""
        if self.raw:
            return self.raw
        lines = [self.info.prompt]
        if self.info.negative_prompt:
            lines.append(f"Negative prompt: {self.info.negative_prompt}")
        if self.info.fields:
            lines.append(format_fields(self.info.fields))
        return "\n".join(line for line in lines if line) if self.found else ""


@dataclass(frozen=True)
class Record:
    """What a file holds beside its pixels: its text chunks and its EXIF UserComment (and GIF comment)."""

    chunks: Mapping[str, str] = field(default_factory=dict)
    #: the EXIF UserComment, decoded, from the Exif IFD or (Fooocus) the first IFD
    user_comment: str | None = None


Reader = Callable[[Record], "ImageGeneration | None"]


def decode_user_comment(raw: bytes | str | None) -> str | None:
    """An EXIF UserComment as text: its 8-byte character-code prefix says how ("UNICODE\\0": UTF-16,
    big-endian as piexif writes it, little-endian as some writers do; "ASCII\\0\\0\\0"; undefined: UTF-8)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw.strip("\0") or None
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        # text that is mostly ASCII has its zero bytes first in big-endian, second in little-endian
        big = body[0::2].count(0) >= body[1::2].count(0)
        text = body.decode("utf-16-be" if big else "utf-16-le", errors="replace")
    elif prefix in (b"ASCII\0\0\0", b"\0" * 8):
        text = body.decode("utf-8", errors="replace")
    else:  # no character code at all (some writers): the whole value is the text
        text = raw.decode("utf-8", errors="replace")
    return text.strip("\0").strip() or None


def _json(text: str | None) -> Any:
    if not text or text.lstrip()[:1] not in "{[":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _fields(pairs: Mapping[str, Any]) -> dict[str, str]:
    """WebUI infotext fields from values, those that are absent or empty left out."""
    return {key: str(value) for key, value in pairs.items() if value not in (None, "")}


def _number(value: Any, kind: type) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _size(width: Any, height: Any) -> str | None:
    width, height = _number(width, int), _number(height, int)
    return f"{width}x{height}" if width and height else None


def _webui_text(record: Record) -> ImageGeneration | None:
    """A1111/Forge/reForge: the PNG "parameters" text, else the EXIF UserComment (JPEG/WebP/AVIF), or a
    GIF's comment, when it is infotext (not another tool's JSON)."""
    for where, text in (("PNG text 'parameters'", record.chunks.get("parameters")),
                        ("EXIF UserComment", record.user_comment), ("GIF comment", record.chunks.get("comment"))):
        if text and not text.lstrip().startswith(("{", "[")):  # JSON is another tool's record, or broken
            info = parse_parameters(text)
            if info.prompt or info.fields:
                return ImageGeneration(info, "A1111/Forge", where, raw=text)
    return None


def _novelai(record: Record) -> ImageGeneration | None:
    if record.chunks.get("Software") != "NovelAI":
        return None
    comment = _json(record.chunks.get("Comment")) or {}
    notes = []
    prompt = comment.get("prompt") or record.chunks.get("Description", "")
    sampler = NOVELAI_SAMPLERS.get(str(comment.get("sampler", "")))
    if comment.get("sampler") and sampler is None:
        notes.append(f"its sampler {comment['sampler']} has no WebUI equivalent")
    fields = _fields({"Steps": comment.get("steps"), "Sampler": sampler, "CFG scale": comment.get("scale"),
                      "Seed": comment.get("seed"), "Size": _size(comment.get("width"), comment.get("height"))})
    return ImageGeneration(GenerationInfo(str(prompt), str(comment.get("uc", "")), fields), "NovelAI",
                           "PNG text 'Comment'", tuple(notes))


def _invokeai(record: Record) -> ImageGeneration | None:
    data = _json(record.chunks.get("invokeai_metadata"))
    if isinstance(data, dict):
        sampler, schedule = INVOKE_SCHEDULERS.get(str(data.get("scheduler", "")), (None, None))
        model = data.get("model")
        fields = _fields({"Steps": data.get("steps"), "Sampler": sampler, "Schedule type": schedule,
                          "CFG scale": data.get("cfg_scale"), "Seed": data.get("seed"),
                          "Size": _size(data.get("width"), data.get("height")),
                          "Model": model.get("name") if isinstance(model, dict) else model})
        return ImageGeneration(GenerationInfo(str(data.get("positive_prompt", "")),
                                              str(data.get("negative_prompt", "")), fields),
                               "InvokeAI", "PNG text 'invokeai_metadata'")
    legacy = _json(record.chunks.get("sd-metadata"))
    if isinstance(legacy, dict) and isinstance(legacy.get("image"), dict):
        image = legacy["image"]
        prompt = image.get("prompt", "")
        if isinstance(prompt, list):  # [{"prompt": ..., "weight": ...}]
            prompt = " ".join(str(part.get("prompt", "")) for part in prompt if isinstance(part, dict))
        fields = _fields({"Steps": image.get("steps"), "CFG scale": image.get("cfg_scale"), "Seed": image.get("seed"),
                          "Size": _size(image.get("width"), image.get("height")),
                          "Model": legacy.get("model_weights")})
        return ImageGeneration(GenerationInfo(str(prompt), "", fields), "InvokeAI", "PNG text 'sd-metadata'")
    return None


def _json_parameters(record: Record) -> tuple[dict[str, Any], str] | None:
    """The "parameters" JSON of Fooocus and SwarmUI: the PNG text, else the EXIF UserComment."""
    for where, text in (("PNG text 'parameters'", record.chunks.get("parameters")),
                        ("EXIF UserComment", record.user_comment)):
        data = _json(text)
        if isinstance(data, dict):
            return data, where
    return None


def _swarmui(record: Record) -> ImageGeneration | None:
    found = _json_parameters(record)
    if found is None or not isinstance(found[0].get("sui_image_params"), dict):
        return None
    data, where = found[0]["sui_image_params"], found[1]
    fields = _fields({"Steps": data.get("steps"), "Sampler": COMFY_SAMPLERS.get(str(data.get("sampler", ""))),
                      "Schedule type": COMFY_SCHEDULERS.get(str(data.get("scheduler", ""))),
                      "CFG scale": data.get("cfgscale"), "Seed": data.get("seed"),
                      "Size": _size(data.get("width"), data.get("height")), "Model": data.get("model")})
    return ImageGeneration(GenerationInfo(str(data.get("prompt", "")), str(data.get("negativeprompt", "")), fields),
                           "SwarmUI", where)


def _fooocus(record: Record) -> ImageGeneration | None:
    found = _json_parameters(record)
    if found is None:
        return None
    data, where = found
    if "sui_image_params" in data or not ({"prompt", "full_prompt"} & set(data)):
        return None
    prompt = data.get("full_prompt") or data.get("prompt", "")
    negative = data.get("full_negative_prompt") or data.get("negative_prompt", "")
    # Fooocus's full prompts are lists of the prompt and its style expansions; its a1111 scheme joins them
    prompt, negative = (", ".join(map(str, p)) if isinstance(p, list) else str(p) for p in (prompt, negative))
    resolution = str(data.get("resolution", "")).strip("()").replace("'", "").split(",")
    size = _size(*resolution) if len(resolution) == 2 else None
    fields = _fields({"Steps": data.get("steps"), "Sampler": COMFY_SAMPLERS.get(str(data.get("sampler", ""))),
                      "Schedule type": COMFY_SCHEDULERS.get(str(data.get("scheduler", ""))),
                      "CFG scale": data.get("guidance_scale"), "Seed": data.get("seed"), "Size": size,
                      "Model": data.get("base_model")})
    return ImageGeneration(GenerationInfo(prompt, negative, fields), "Fooocus", where)


def _comfyui(record: Record) -> ImageGeneration | None:
    graph = _json(record.chunks.get("prompt"))
    if not isinstance(graph, dict):
        return None
    nodes = {str(key): node for key, node in graph.items() if isinstance(node, dict)}
    # a sampler takes a latent beside its prompts (a ControlNet apply takes the prompts alone)
    samplers = [key for key, node in nodes.items() if isinstance(node.get("inputs"), dict)
                and {"positive", "latent_image"} <= set(node["inputs"])]
    if not samplers:
        return ImageGeneration(GenerationInfo(), "ComfyUI", "PNG text 'prompt'",
                               ("the ComfyUI graph has no sampler node with a positive prompt",))
    chosen, why = _comfy_sampler(nodes, samplers)
    inputs = nodes[chosen]["inputs"]
    positive, positive_nodes = _comfy_text(nodes, inputs.get("positive"))
    negative, _ = _comfy_text(nodes, inputs.get("negative"))
    notes = [why] if why else []
    if not positive_nodes:
        notes.append(f"the ComfyUI graph's sampler (node {chosen}) has no prompt text this extension can follow")
    seed = inputs.get("seed", inputs.get("noise_seed"))
    fields = _fields({
        "Steps": _comfy_value(inputs.get("steps")), "Sampler": COMFY_SAMPLERS.get(str(inputs.get("sampler_name"))),
        "Schedule type": COMFY_SCHEDULERS.get(str(inputs.get("scheduler"))),
        "CFG scale": _comfy_value(inputs.get("cfg")), "Seed": _comfy_value(seed),
        "Model": _comfy_model(nodes, inputs.get("model"))})
    where = (f"the ComfyUI graph, node {', '.join(positive_nodes)}" if positive_nodes
             else f"the ComfyUI graph, node {chosen}")
    return ImageGeneration(GenerationInfo(positive, negative, fields), "ComfyUI", where, tuple(notes))


def _comfy_value(value: Any) -> Any:
    """A widget value, not a link ([node, slot]: fed by another node, unknown here)."""
    return None if isinstance(value, list) else value


def _comfy_sampler(nodes: dict[str, Any], samplers: list[str]) -> tuple[str, str]:
    """The sampler whose image was saved (the last before a save node), else the last one; and, when
    there were several, which was taken and why."""
    saved = []
    for node in nodes.values():
        if str(node.get("class_type", "")).startswith(("SaveImage", "PreviewImage")):
            found = _comfy_upstream(nodes, node.get("inputs", {}).get("images"), set(samplers))
            if found is not None:
                saved.append(found)
    if len(samplers) == 1:
        return samplers[0], ""
    ordered = sorted(samplers, key=_node_order)
    chosen = saved[0] if saved else ordered[-1]
    why = "whose image was saved" if saved else "the last in the graph"
    return chosen, (f"the ComfyUI graph has {len(samplers)} samplers (nodes {', '.join(ordered)}); the prompt of "
                    f"node {chosen}, {why}, was taken")


def _node_order(key: str) -> tuple[int, str]:
    return (int(key), key) if key.isdigit() else (1 << 30, key)


def _comfy_upstream(nodes: dict[str, Any], link: Any, wanted: set[str], depth: int = 0) -> str | None:
    """The first node of `wanted` found going up from `link`."""
    if not (isinstance(link, list) and link) or depth > _COMFY_DEPTH:
        return None
    key = str(link[0])
    if key in wanted:
        return key
    node = nodes.get(key) or {}
    for value in (node.get("inputs") or {}).values():
        found = _comfy_upstream(nodes, value, wanted, depth + 1)
        if found is not None:
            return found
    return None


def _comfy_text(nodes: dict[str, Any], link: Any, depth: int = 0) -> tuple[str, list[str]]:
    """The prompt text a conditioning link comes from, and the nodes it was read from."""
    if not (isinstance(link, list) and link) or depth > _COMFY_DEPTH:
        return "", []
    key, slot = str(link[0]), link[1] if len(link) > 1 else 0
    inputs = (nodes.get(key) or {}).get("inputs") or {}
    texts: list[str] = []
    sources: list[str] = []
    for name in _COMFY_TEXT_INPUTS:
        value = inputs.get(name)
        if isinstance(value, str) and value.strip():
            if value not in texts:
                texts.append(value)
            sources = [key]
        elif isinstance(value, list):  # the text itself comes from another node (a string or primitive)
            text, found = _comfy_text(nodes, value, depth + 1)
            if text and text not in texts:
                texts.append(text)
                sources = found or [key]
    if texts:
        return ", ".join(texts), sources
    # a node between the text and the sampler: a ControlNet apply passes positive on slot 0, negative on 1
    side = ("positive", "negative")[slot] if slot in (0, 1) and "positive" in inputs else None
    for name in ((side,) if side else _COMFY_CONDITIONING_INPUTS):
        text, found = _comfy_text(nodes, inputs.get(name), depth + 1)
        if text:
            return text, found
    return "", []


def _comfy_model(nodes: dict[str, Any], link: Any, depth: int = 0) -> str | None:
    """The checkpoint file the sampler's model comes from (through LoRA loaders and patches)."""
    if not (isinstance(link, list) and link) or depth > _COMFY_DEPTH:
        return None
    inputs = (nodes.get(str(link[0])) or {}).get("inputs") or {}
    for name in ("ckpt_name", "unet_name"):
        if isinstance(inputs.get(name), str):
            return inputs[name]
    return _comfy_model(nodes, inputs.get("model"), depth + 1)


#: Tried in order: the records a tool marks as its own first; then the WebUI's infotext (which a
#: ComfyUI image saved by a WebUI-style node may carry beside its graph), then ComfyUI's graph.
READERS: tuple[Reader, ...] = (_novelai, _invokeai, _swarmui, _fooocus, _webui_text, _comfyui)


def read_generation(record: Record) -> ImageGeneration:
    """What the image's own record says, from the first reader that recognises it; an empty
    `ImageGeneration` (tool "") when none does, with a note where a record was there but unreadable."""
    for reader in READERS:
        try:
            found = reader(record)
        except (AttributeError, TypeError, ValueError, KeyError, IndexError):
            # valid JSON of a shape no tool writes (a list for an object, null inputs): another
            # reader may still know the record, else it is said to be unreadable below
            continue
        if found is not None:
            return found
    known = [key for key in ("parameters", "prompt", "Comment", "invokeai_metadata") if record.chunks.get(key)]
    if known or record.user_comment:
        where = ", ".join(f"PNG text {key!r}" for key in known) or "EXIF UserComment"
        return ImageGeneration(GenerationInfo(), "", where, (f"its {where} could not be read as generation info",))
    return ImageGeneration(GenerationInfo())
