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


def main(out: str) -> None:
    sys.path.insert(0, os.path.join(os.getcwd(), "repositories", "stable-diffusion-stability-ai"))
    import ldm.modules.encoders.modules as encoders
    from ldm.util import instantiate_from_config
    from omegaconf import OmegaConf
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    class ConfigOnlyTextModel:
        @staticmethod
        def from_pretrained(name: str, *args, **kwargs) -> CLIPTextModel:
            return CLIPTextModel(CLIPTextConfig.from_pretrained(name))

    encoders.CLIPTextModel = ConfigOnlyTextModel
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = instantiate_from_config(OmegaConf.load("configs/v1-inference.yaml").model)
    # A fresh LayerNorm has bias 0, so every token embedding has mean exactly 0; the WebUI's
    # prompt emphasis rescales by old_mean / new_mean and turns that into NaN conditioning.
    final_norm = model.cond_stage_model.transformer.text_model.final_layer_norm
    with torch.no_grad():
        final_norm.bias.normal_(0.1, 0.02)
        # ldm zero-initialises the UNet's output layers (each ResBlock's last conv, each transformer's
        # proj_out, the final conv): its noise prediction is then 0 whatever the prompt, the CFG or
        # the checkpoint. Small random weights there make the prompt and the CFG matter.
        for parameter in model.model.diffusion_model.parameters():
            if parameter.dim() > 1 and not parameter.any():
                parameter.normal_(0.0, UNET_OUTPUT_STD)
        # A trained VAE's posterior is nearly a point (log-variance around -20); a random one's has a
        # standard deviation near 1, and the WebUI samples it with the global RNG, so an image's latent
        # would depend on what else was in its batch. Make it as narrow as a trained one's.
        logvar = model.first_stage_model.quant_conv
        channels = logvar.out_channels // 2
        logvar.weight[channels:].zero_()
        logvar.bias[channels:].fill_(VAE_LOGVAR)
    state = {k: (v.half() if v.is_floating_point() else v).detach().clone().contiguous()
             for k, v in model.state_dict().items()}
    partial = out + ".partial"
    save_file(state, partial)
    os.replace(partial, out)


if __name__ == "__main__":
    main(sys.argv[1])
