"""Make a random-weight SD1.5 checkpoint with the WebUI's own model code.

Run inside the WebUI's venv, from its root, with the offline Hugging Face cache:

    HF_HOME=... HF_HUB_OFFLINE=1 venv/bin/python <this file> OUT.safetensors

The architecture comes from the WebUI's configs/v1-inference.yaml; offline the
CLIP text encoder has no weights to download, so it is built from its config.
Weights are random: the images are noise, which is all the tests need.
"""

from __future__ import annotations

import os
import sys

import torch

#: std of the UNet's zero-initialised output layers, and the VAE posterior's log-variance (see main)
UNET_OUTPUT_STD = 0.02
VAE_LOGVAR = -20.0


def build_text_encoders_from_configs(encoders) -> None:
    """Offline there are no CLIP weights to download: `encoders`' CLIPTextModel builds from its config."""
    from transformers import CLIPTextConfig, CLIPTextModel

    class ConfigOnlyTextModel:
        @staticmethod
        def from_pretrained(name: str, *args, **kwargs) -> CLIPTextModel:
            return CLIPTextModel(CLIPTextConfig.from_pretrained(name))

    encoders.CLIPTextModel = ConfigOnlyTextModel


@torch.no_grad()
def like_a_trained_model(unet: torch.nn.Module, vae_quant_conv: torch.nn.Conv2d,
                         *text_norms: torch.nn.LayerNorm) -> None:
    """What a random model needs to behave like a trained one where the tests look."""
    # A fresh LayerNorm has bias 0, so every token embedding has mean exactly 0; the WebUI's
    # prompt emphasis rescales by old_mean / new_mean and turns that into NaN conditioning.
    for norm in text_norms:
        norm.bias.normal_(0.1, 0.02)
    # ldm zero-initialises the UNet's output layers (each ResBlock's last conv, each transformer's
    # proj_out, the final conv): its noise prediction is then 0 whatever the prompt, the CFG or
    # the checkpoint. Small random weights there make the prompt and the CFG matter.
    for parameter in unet.parameters():
        if parameter.dim() > 1 and not parameter.any():
            parameter.normal_(0.0, UNET_OUTPUT_STD)
    # A trained VAE's posterior is nearly a point (log-variance around -20); a random one's has a
    # standard deviation near 1, and the WebUI samples it with the global RNG, so an image's latent
    # would depend on what else was in its batch. Make it as narrow as a trained one's.
    channels = vae_quant_conv.out_channels // 2
    vae_quant_conv.weight[channels:].zero_()
    vae_quant_conv.bias[channels:].fill_(VAE_LOGVAR)


def save(state: dict[str, torch.Tensor], out: str) -> None:
    """Write the checkpoint; a half-written file never looks finished."""
    from safetensors.torch import save_file

    partial = out + ".partial"
    save_file(state, partial)
    os.replace(partial, out)


def main(out: str) -> None:
    sys.path.insert(0, os.path.join(os.getcwd(), "repositories", "stable-diffusion-stability-ai"))
    import ldm.modules.encoders.modules as encoders
    from ldm.util import instantiate_from_config
    from omegaconf import OmegaConf

    build_text_encoders_from_configs(encoders)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = instantiate_from_config(OmegaConf.load("configs/v1-inference.yaml").model)
    like_a_trained_model(model.model.diffusion_model, model.first_stage_model.quant_conv,
                         model.cond_stage_model.transformer.text_model.final_layer_norm)
    save({k: (v.half() if v.is_floating_point() else v).detach().clone().contiguous()
          for k, v in model.state_dict().items()}, out)


if __name__ == "__main__":
    main(sys.argv[1])
