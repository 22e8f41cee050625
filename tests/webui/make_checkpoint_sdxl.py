"""Make a random-weight SDXL base checkpoint with A1111's own SDXL code (its generative-models repository).

Run inside A1111's venv, from its root, with the offline Hugging Face cache:

    HF_HOME=... HF_HUB_OFFLINE=1 venv/bin/python <this file> OUT.safetensors

The architecture is the WebUI's repositories/generative-models/configs/inference/sd_xl_base.yaml:
full size, since the host's config fixes every shape. Offline, neither text encoder has weights to
download, so the CLIP ViT-L is built from its config and OpenCLIP's ViT-bigG with pretrained=None;
its vision tower, which SDXL deletes anyway, is never built (it alone would take 7 GB). The file is
in the original layout (model.diffusion_model.*, conditioner.embedders.0.transformer.*,
conditioner.embedders.1.model.*, first_stage_model.*), fp16, about 7 GB; Forge loads the same file.
Building it takes about 14 GB of memory. Weights are random: the images are noise, which is all the
tests need.
"""

from __future__ import annotations

import os
import sys

import torch
from make_checkpoint import build_text_encoders_from_configs, like_a_trained_model, save  # this folder


def main(out: str) -> None:
    sys.path.insert(0, os.path.join(os.getcwd(), "repositories", "generative-models"))
    import open_clip.model
    import sgm.modules.encoders.modules as encoders
    from omegaconf import OmegaConf
    from sgm.util import instantiate_from_config

    build_text_encoders_from_configs(encoders)
    open_clip.model._build_vision_tower = lambda *args, **kwargs: torch.nn.Identity()
    # the transforms are for images, which SDXL never feeds it
    encoders.open_clip.create_model_and_transforms = lambda arch, device, pretrained: (
        open_clip.create_model(arch, device=device, pretrained=None), None, None)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    config = OmegaConf.load("repositories/generative-models/configs/inference/sd_xl_base.yaml")
    config.model.params.network_config.params.spatial_transformer_attn_type = "softmax"  # no xformers here
    model = instantiate_from_config(config.model)
    clip_l, bigg = model.conditioner.embedders[0].transformer, model.conditioner.embedders[1].model
    like_a_trained_model(model.model.diffusion_model, model.first_stage_model.quant_conv,
                         clip_l.text_model.final_layer_norm, bigg.ln_final)
    model.half()  # in place: the fp32 weights are freed before the file's copy is made
    save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out)


if __name__ == "__main__":
    main(sys.argv[1])
