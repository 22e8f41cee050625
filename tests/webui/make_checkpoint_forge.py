"""Make a random-weight SD1.5 checkpoint that Forge (and Forge Neo) loads, with its own files.

Run inside Forge's venv, from its root (no network needed):

    venv/bin/python <this file> OUT.safetensors

Forge has no `ldm` package (so tests/webui/make_checkpoint.py cannot run there). The
architectures are the diffusers configs Forge ships in
backend/huggingface/runwayml/stable-diffusion-v1-5; diffusers builds the models, and
Forge's repositories/huggingface_guess converts them to the original LDM key layout it
detects as SD1.5 (model.diffusion_model.*, first_stage_model.*,
cond_stage_model.transformer.*). Seeded, so the file is the same on every run; fp16,
about 2 GB. Weights are random: the images are noise, which is all the tests need.
"""

from __future__ import annotations

import os
import sys

import torch


def state_dict(forge: str) -> dict[str, torch.Tensor]:
    sys.path.insert(0, os.path.join(forge, "repositories", "huggingface_guess"))  # a Forge "repository", not pip
    sys.path.insert(0, os.path.join(forge, "modules_forge", "packages"))  # where Forge Neo keeps it
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from huggingface_guess import diffusers_convert
    from transformers import CLIPTextConfig, CLIPTextModel

    layouts = os.path.join(forge, "backend", "huggingface", "runwayml", "stable-diffusion-v1-5")
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(os.path.join(layouts, "unet")))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(os.path.join(layouts, "vae")))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(os.path.join(layouts, "text_encoder")))
    # A fresh LayerNorm has bias 0, so every token embedding has mean exactly 0; the WebUI's
    # prompt emphasis rescales by old_mean / new_mean and turns that into NaN conditioning.
    with torch.no_grad():
        text_encoder.text_model.final_layer_norm.bias.normal_(0.1, 0.02)
        # A trained VAE's posterior is nearly a point (log-variance around -20); a random one's has a
        # standard deviation near 1, and the WebUI samples it with the global RNG, so an image's latent
        # would depend on what else was in its batch (see make_checkpoint.py).
        channels = vae.quant_conv.out_channels // 2
        vae.quant_conv.weight[channels:].zero_()
        vae.quant_conv.bias[channels:].fill_(-20.0)

    state = {}
    for key, value in diffusers_convert.convert_unet_state_dict(unet.state_dict()).items():
        state["model.diffusion_model." + key] = value
    for key, value in diffusers_convert.convert_vae_state_dict(vae.state_dict()).items():
        state["first_stage_model." + key] = value
    for key, value in text_encoder.state_dict().items():  # SD1.5 keeps the Hugging Face CLIP names
        state["cond_stage_model.transformer." + key] = value
    # A diffusers name left over means the converter missed a key, and Forge would not detect the model.
    leftover = [k for k in state if any(part in k for part in ("down_blocks", "up_blocks", "mid_block", "resnets"))]
    if leftover:
        raise RuntimeError(f"keys left in the diffusers layout: {leftover[:5]}")
    return state


def main(out: str) -> None:
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    state = {k: (v.half() if v.is_floating_point() else v).detach().contiguous() for k, v in
             state_dict(os.getcwd()).items()}
    partial = out + ".partial"
    save_file(state, partial)
    os.replace(partial, out)  # a half-written file never looks finished


if __name__ == "__main__":
    main(sys.argv[1])
