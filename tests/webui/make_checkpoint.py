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
    state = {k: (v.half() if v.is_floating_point() else v).detach().clone().contiguous()
             for k, v in model.state_dict().items()}
    partial = out + ".partial"
    save_file(state, partial)
    os.replace(partial, out)


if __name__ == "__main__":
    main(sys.argv[1])
