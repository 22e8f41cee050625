"""Test-only WebUI extension: injects faults the real hardware cannot be made to give on demand.

The harness links it into the test WebUI's extensions beside ours and names a JSON
file in HIRES_UPSCALE_TEST_FAULTS; tests write faults there (WebUI.inject). With no
file, or an empty list, it does nothing. Each fault fires `times` times (default 1):

- {"kind": "oom", "stage": "unet", "min_pixels": N}: the UNet raises CUDA's out-of-memory
  error when its input covers at least N image pixels (a tile covers fewer).
- {"kind": "oom", "stage": "vae decode", "min_pixels": N}: the VAE decoder's last layer
  does, where a decode's memory peaks, when its input has at least N pixels.
- {"kind": "interrupt", "stage": "sampling", "min_pixels": N}: the WebUI's interrupt is
  pressed at the first sampling step of a picture of at least N pixels; "kind": "skip" presses
  its Skip instead.
- any fault may add "min_batch": B: it fires only for a model call of at least B rows (a batch's
  second pass runs cond and uncond of every image in one call).
- {"kind": "raise", "stage": "module.name.function"}: that function of sd-webui-hires-upscale
  raises when called (replaced before the UI is built, so a test starting a WebUI with the fault
  armed sees a part of the extension fail at start, e.g. "hires_upscale.webui.ui.add_option").
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import torch
from modules import script_callbacks, shared

FAULTS = Path(os.environ.get("HIRES_UPSCALE_TEST_FAULTS", "/nonexistent"))


def _take(kind: str, stage: str, pixels: int, rows: int = 1) -> bool:
    """Whether a fault of this kind and stage fires now (and spend one of its times)."""
    try:
        faults = json.loads(FAULTS.read_text())
    except (OSError, ValueError):
        return False
    for fault in faults:
        if (fault["kind"], fault["stage"]) == (kind, stage) and pixels >= fault.get("min_pixels", 0) \
                and rows >= fault.get("min_batch", 0) and fault.get("times", 1) > 0:
            fault["times"] = fault.get("times", 1) - 1
            FAULTS.write_text(json.dumps(faults))
            return True
    return False


def _raise_out_of_memory(stage: str, pixels: int, rows: int = 1) -> None:
    if _take("oom", stage, pixels, rows):
        raise torch.cuda.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate 9.50 GiB (injected by the hires-upscale tests: {stage} "
            f"at {pixels} pixels)")


def _modules(model):
    """The loaded model's UNet and VAE decoder: A1111's LDM model, or Forge's `forge_objects`
    (where `model.model` and `first_stage_model` are not the modules that run)."""
    forge = getattr(model, "forge_objects", None)
    if forge is not None:
        return forge.unet.model.diffusion_model, forge.vae.first_stage_model.decoder
    return model.model.diffusion_model, model.first_stage_model.decoder


def _install(model) -> None:
    """Hooks on the loaded model's UNet and VAE decoder, once per model."""
    if model is None or getattr(model, "_hires_upscale_test_faults", False):
        return
    unet, decoder = _modules(model)
    model._hires_upscale_test_faults = True
    unet.register_forward_pre_hook(
        lambda module, inputs: _raise_out_of_memory("unet", inputs[0].shape[-1] * inputs[0].shape[-2] * 64,
                                                    inputs[0].shape[0]))
    decoder.conv_out.register_forward_pre_hook(
        lambda module, inputs: _raise_out_of_memory("vae decode", inputs[0].shape[-1] * inputs[0].shape[-2]))


def on_cfg_denoiser(params) -> None:
    _install(shared.sd_model)
    pixels = params.x.shape[-1] * params.x.shape[-2] * 64
    if _take("interrupt", "sampling", pixels):
        shared.state.interrupt()
    if _take("skip", "sampling", pixels):
        shared.state.skip()


def _arm_raises() -> None:
    """Replace each function named by a "raise" fault with one that raises while the fault has times left."""
    try:
        faults = json.loads(FAULTS.read_text())
    except (OSError, ValueError):
        return
    for fault in faults:
        if fault["kind"] != "raise":
            continue
        module_name, _, name = fault["stage"].rpartition(".")
        module = sys.modules[module_name]
        original = getattr(module, name)
        if getattr(original, "_hires_upscale_test_fault", False):
            continue

        @functools.wraps(original)
        def failing(*args, _original=original, _stage=fault["stage"], **kwargs):
            if _take("raise", _stage, 0):
                raise RuntimeError(f"injected by the hires-upscale tests: {_stage} fails")
            return _original(*args, **kwargs)

        failing._hires_upscale_test_fault = True
        setattr(module, name, failing)


script_callbacks.on_before_ui(_arm_raises)
script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_model_loaded(_install)
