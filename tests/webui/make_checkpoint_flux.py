"""Make a random-weight Flux dev checkpoint that Forge Neo loads and runs on the CPU.

Run inside Forge Neo's venv, from its root (no network needed):

    venv/bin/python <this file> OUT.safetensors

One file with the four parts a Flux "all in one" checkpoint holds, under the prefixes Forge Neo's
huggingface_guess reads (`model.diffusion_model.`, `vae.`, `text_encoders.clip_l.transformer.`,
`text_encoders.t5xxl.transformer.`):

- the transformer: Forge Neo's own Flux class at a reduced size (hidden 256, one double and one
  single block, guidance-embedded like Flux dev). Forge Neo reads the width and depth from the file;
  Forge main does not, and sizes every Flux file at 12 B parameters, so this file is Forge Neo's only;
- the VAE and CLIP-L at their real sizes, from the diffusers configs Forge Neo ships;
- T5-XXL at its real size (4.7 B parameters, which Forge Neo builds from a fixed config), stored
  in float8_e4m3fn like the usual "t5xxl_fp8" files: Forge Neo keeps it in fp8 and casts per layer.

Written tensor by tensor (a safetensors file is a JSON header and the raw bytes), so memory stays
at one tensor; about 4.9 GB. Seeded: the same file on every run. The weights are random, the
images noise, which is all the tests need.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator

import torch

#: the transformer's reduced size: Forge Neo derives the heads from the width (hidden / 128)
HIDDEN, DOUBLE_BLOCKS, SINGLE_BLOCKS = 256, 1, 1
FLUX = os.path.join("backend", "huggingface", "black-forest-labs", "FLUX.1-dev")
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.float8_e4m3fn: "F8_E4M3"}

#: (name, shape, dtype, make the tensor)
Entry = tuple[str, tuple[int, ...], torch.dtype, Callable[[], torch.Tensor]]


def transformer() -> Iterator[Entry]:
    sys.argv = [sys.argv[0], "--cpu"]  # Forge Neo's backend reads its device switch when imported
    sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "modules_forge", "packages")]  # as its launcher does
    from backend.nn.flux import IntegratedFluxTransformer2DModel

    with torch.device("meta"):
        model = IntegratedFluxTransformer2DModel(
            in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=HIDDEN, mlp_ratio=4.0,
            num_heads=HIDDEN // 128, depth=DOUBLE_BLOCKS, depth_single_blocks=SINGLE_BLOCKS, axes_dim=[16, 56, 56],
            theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True)
    for name, tensor in model.state_dict().items():
        norm = name.endswith(("query_norm.weight", "key_norm.weight"))
        if norm:  # Black Forest Labs' files (and Forge Neo's detector) name the RMSNorm scales ".scale"
            name = name.removesuffix(".weight") + ".scale"
        yield (f"model.diffusion_model.{name}", tuple(tensor.shape), torch.float32,
               _random(tuple(tensor.shape), torch.float32, ones=norm))


def vae_and_clip() -> Iterator[Entry]:
    from diffusers import AutoencoderKL
    from huggingface_guess import diffusers_convert
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(os.path.join(FLUX, "vae")))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(os.path.join(FLUX, "text_encoder")))
    with torch.no_grad():
        # as in make_checkpoint_forge.py: emphasis divides by the embeddings' mean, 0 for a fresh LayerNorm
        text_encoder.text_model.final_layer_norm.bias.normal_(0.1, 0.02)
        # Flux's VAE has no quant_conv: its encoder's last convolution gives the posterior's mean and
        # log-variance. A trained one's variance is nearly 0; a random one's would make each image's
        # latent depend on the RNG and on the rest of its batch.
        conv = vae.encoder.conv_out
        channels = conv.out_channels // 2
        conv.weight[channels:].zero_()
        conv.bias[channels:].fill_(-20.0)
    for key, value in diffusers_convert.convert_vae_state_dict(vae.state_dict()).items():
        yield f"vae.{key}", tuple(value.shape), torch.float16, _fixed(value)
    for key, value in text_encoder.state_dict().items():
        yield f"text_encoders.clip_l.transformer.{key}", tuple(value.shape), torch.float16, _fixed(value)


def t5() -> Iterator[Entry]:
    from transformers import T5Config, T5EncoderModel

    with torch.device("meta"):
        model = T5EncoderModel(T5Config.from_pretrained(os.path.join(FLUX, "text_encoder_2")))
    for name, tensor in model.state_dict().items():
        if name == "encoder.embed_tokens.weight":  # the same tensor as "shared.weight"; Forge Neo skips it
            continue
        shape = tuple(tensor.shape)
        yield (f"text_encoders.t5xxl.transformer.{name}", shape, torch.float8_e4m3fn,
               _random(shape, torch.float8_e4m3fn, ones=name.endswith("layer_norm.weight")))


def _random(shape: tuple[int, ...], dtype: torch.dtype, *, ones: bool) -> Callable[[], torch.Tensor]:
    def make() -> torch.Tensor:
        if ones:  # norms' scales
            return torch.ones(shape, dtype=torch.float32).to(dtype)
        # 1/sqrt(fan-in) keeps the activations of a random stack finite
        fan_in = shape[-1] if len(shape) > 1 else 1
        return (torch.randn(shape) * (1.0 / fan_in**0.5 if len(shape) > 1 else 0.02)).to(dtype)

    return make


def _fixed(value: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: value.detach()


def write(path: str, entries: list[Entry]) -> None:
    """A safetensors file written one tensor at a time."""
    header, offset = {}, 0
    for name, shape, dtype, _make in entries:
        size = torch.empty((), dtype=dtype).element_size()
        for side in shape:
            size *= side
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    torch.manual_seed(1)
    with open(path, "wb") as stream:
        stream.write(len(text).to_bytes(8, "little"))
        stream.write(text)
        for name, shape, dtype, make in entries:
            tensor = make().to(dtype).contiguous()
            assert tuple(tensor.shape) == shape, (name, tensor.shape, shape)
            stream.write(tensor.view(torch.uint8).numpy().tobytes())


def main(out: str) -> None:
    torch.set_num_threads(2)
    entries = [*transformer(), *vae_and_clip(), *t5()]
    partial = out + ".partial"
    write(partial, entries)
    os.replace(partial, out)  # a half-written file never looks finished


if __name__ == "__main__":
    main(sys.argv[1])
