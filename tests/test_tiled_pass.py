"""Tiled VAE and tiled UNet on real diffusers modules (random weights, small widths)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn

from hires_upscale.memory import TileSettings
from hires_upscale.tiled_unet import CannotTile, UNetTiler, tiled_model_call, tiled_unet
from hires_upscale.tiled_vae import latent_stage, tiled_decode, tiled_encode, tiled_vae
from hires_upscale.tiling import fitted_grid, run_tiled


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Peak signal to noise over the reference's own range."""
    peak = (reference.max() - reference.min()).item()
    mse = ((reference - other) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


@pytest.fixture(scope="module")
def vae() -> AutoencoderKL:
    """The SD VAE's layout (4 levels: 8x, GroupNorm, a middle stage with attention), narrow."""
    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=[16, 32, 32, 32], down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, norm_num_groups=8,
                         latent_channels=4).eval()


def picture(size: int) -> torch.Tensor:
    """A smooth picture in [-1, 1] whose content differs from tile to tile."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([torch.sin(6 * xx) * 0.8, torch.cos(5 * yy) * 0.8, xx - yy])[None]


@torch.no_grad()
def test_tiled_decode_starts_every_tile_from_the_full_frame_middle_stage(vae):
    image = picture(256)
    latent = vae.encoder(image)[:, :4]
    full = vae.decoder(latent)
    ours = tiled_decode(vae.decoder, latent, coder=vae.decoder, tile=20, overlap=6)
    plain = run_tiled(vae.decoder, latent, fitted_grid(32, 32, 20, 6), scale=8)
    assert ours.shape == full.shape == (1, 3, 256, 256)
    # tiles of 128 px: the shared middle stage (global attention and statistics) brings them closer
    assert psnr(full, ours) > psnr(full, plain) + 1, (psnr(full, ours), psnr(full, plain))
    assert psnr(full, ours) > 32


@torch.no_grad()
def test_tiled_encode_shares_the_whole_pictures_statistics(vae):
    image = picture(256)
    full = vae.encoder(image)
    ours = tiled_encode(vae.encoder, image, coder=vae.encoder, tile=16, overlap=4)
    plain = run_tiled(vae.encoder, image, fitted_grid(32, 32, 16, 4), input_scale=8)
    assert ours.shape == full.shape == (1, 8, 32, 32)
    assert psnr(full, ours) > psnr(full, plain) + 6, (psnr(full, ours), psnr(full, plain))


@torch.no_grad()
def test_one_tile_is_the_plain_call(vae):
    latent = torch.randn(1, 4, 16, 16)
    assert torch.equal(tiled_decode(vae.decoder, latent, coder=vae.decoder, tile=16), vae.decoder(latent))
    image = picture(128)
    assert torch.equal(tiled_encode(vae.encoder, image, coder=vae.encoder, tile=16), vae.encoder(image))


def test_the_middle_stage_is_found_in_both_layouts(vae):
    assert latent_stage(vae.decoder) == [vae.decoder.mid_block]  # diffusers: one module with a forward

    class Middle(nn.Module):  # the WebUI's layout: a container whose children the decoder calls
        def __init__(self):
            super().__init__()
            self.block_1, self.attn_1, self.block_2 = nn.Identity(), nn.Identity(), nn.Identity()

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.mid = Middle()

    decoder = Decoder()
    assert latent_stage(decoder) == [decoder.mid.block_1, decoder.mid.attn_1, decoder.mid.block_2]
    assert latent_stage(nn.Conv2d(1, 1, 1)) == []


@pytest.mark.reliability(area="Low VRAM", tried="an error raised inside a tiled VAE pass",
                         expected="every replaced forward restored, another extension's wrapper included")
@torch.no_grad()
def test_tiled_vae_restores_every_forward_even_after_an_error(vae):
    def foreign(x):  # another extension's own wrapper must come back too
        return vae.decoder.__class__.forward(vae.decoder, x)

    vae.decoder.forward = foreign
    try:
        with pytest.raises(RuntimeError, match="boom"), tiled_vae(vae.encoder, vae.decoder, TileSettings(16, 4)):
            assert vae.encoder.forward.__name__ == "tiled_encoder"
            vae.decoder(torch.randn(1, 4, 32, 32))  # runs tiled: patches the middle stage while it runs
            raise RuntimeError("boom")
        assert vae.decoder.forward is foreign
        assert "forward" not in vars(vae.encoder)
        assert all("forward" not in vars(m) for m in vae.modules() if m is not vae.decoder)
    finally:
        del vae.decoder.forward


@pytest.mark.reliability(area="Faults", tried="interrupt during a tiled VAE decode",
                         expected="stops between tiles, nothing left patched")
def test_a_tiled_decode_can_be_stopped(vae):
    from hires_upscale.errors import Interrupted

    with torch.no_grad(), pytest.raises(Interrupted):
        tiled_decode(vae.decoder, torch.randn(1, 4, 32, 32), coder=vae.decoder, tile=16, should_stop=lambda: True)
    assert all("forward" not in vars(m) for m in vae.modules())


# -- the UNet -----------------------------------------------------------------------------


def pointwise_model(x, t, cond):
    """A model without spatial reach, whose output depends on every input it is given:
    tiled must then equal full frame exactly, which checks the batching of tiles."""
    crossattn = cond["c_crossattn"][0].mean(dim=(1, 2))
    concat = cond["c_concat"][0]
    return x * t[:, None, None, None] + crossattn[:, None, None, None] + concat.sum(dim=1, keepdim=True)


@pytest.mark.parametrize("concat_size", [1, 48], ids=["webui-dummy-1x1", "inpainting-spatial"])
def test_tiles_share_the_conditioning_row_by_row(concat_size):
    torch.manual_seed(1)
    x = torch.randn(2, 4, 48, 64)  # cond and uncond rows differ in everything
    t = torch.tensor([3.0, 0.5])
    cond = {"c_crossattn": [torch.randn(2, 77, 8)],
            "c_concat": [torch.randn(2, 5, concat_size, concat_size if concat_size == 1 else 64)]}
    full = pointwise_model(x, t, cond)
    tiled = tiled_model_call(pointwise_model, x, t, cond, tile=24, overlap=8, batch=3)
    assert torch.allclose(tiled, full, atol=1e-5)


@pytest.mark.reliability(area="Low VRAM", tried="UNet conditioning of another batch or a hint of another size",
                         expected="refused by name, so the call runs full frame instead of garbage")
def test_conditioning_the_tiles_cannot_share_is_refused():
    x = torch.randn(2, 4, 64, 64)
    with pytest.raises(CannotTile, match="batch 4 for a latent batch of 2"):
        tiled_model_call(pointwise_model, x, torch.ones(2), {"c_crossattn": [torch.randn(4, 77, 8)],
                                                              "c_concat": [torch.zeros(2, 5, 1, 1)]}, tile=32)
    with pytest.raises(CannotTile, match="spatial conditioning of 32x32 for a 64x64 latent"):
        tiled_model_call(pointwise_model, x, torch.ones(2), {"c_crossattn": [torch.randn(2, 77, 8)],
                                                              "c_concat": [torch.zeros(2, 5, 32, 32)]}, tile=32)


class Denoiser:
    """Stands where the WebUI's model is: something with `apply_model(x, t, cond)`."""

    def __init__(self):
        self.calls: list[tuple[int, ...]] = []

    def apply_model(self, x, t, cond):
        self.calls.append(tuple(x.shape))
        return x * t[:, None, None, None]


def test_tiled_unet_falls_back_to_full_frame_once_told_why_and_restores():
    denoiser, heard = Denoiser(), []
    cond = {"c_crossattn": [torch.randn(2, 77, 8)], "c_concat": [torch.zeros(2, 5, 1, 1)]}
    x = torch.randn(2, 4, 64, 64)
    with tiled_unet(denoiser, settings=TileSettings(unet_tile=32, unet_overlap=8, unet_batch=4),
                    on_fallback=heard.append):
        denoiser.apply_model(x, torch.ones(2), cond=cond)
        assert denoiser.calls == [(8, 4, 27, 27)] * 2 + [(2, 4, 27, 27)]  # 3x3 tiles, 4 per call, batch of 2
        hint = {**cond, "c_concat": [torch.zeros(2, 5, 8, 8)]}
        denoiser.apply_model(x, torch.ones(2), hint)
        denoiser.apply_model(x, torch.ones(2), hint)
        assert denoiser.calls[-1] == (2, 4, 64, 64)
    assert len(heard) == 1 and "8x8" in heard[0]
    assert "apply_model" not in vars(denoiser)

    hooked = Denoiser()
    with tiled_unet(hooked, cannot_tile=lambda: "the UNet is hooked by ControlNet", on_fallback=heard.append):
        hooked.apply_model(x, torch.ones(2), cond)
    assert hooked.calls == [(2, 4, 64, 64)] and heard[-1] == "the UNet is hooked by ControlNet"


def forge_apply_model(x, t, c_crossattn, y, transformer_options):
    """Forge's `apply_model(x, t, **c)` shape, with SDXL's vector conditioning `y` (pooled text, size
    and crop embeddings) and the per-row sigmas Forge puts in its transformer options."""
    sigmas = transformer_options["sigmas"]
    return (x * t[:, None, None, None] + c_crossattn.mean(dim=(1, 2))[:, None, None, None]
            + y.mean(dim=1)[:, None, None, None] + sigmas[:, None, None, None])


def test_a_forge_style_call_with_sdxl_vector_conditioning_tiles_exactly():
    """Every tile gets its row's `y` unchanged, as the full-frame call does (the vector describes the
    whole picture, so no tile is told it is a crop)."""
    torch.manual_seed(3)
    x, t = torch.randn(2, 4, 48, 64), torch.tensor([3.0, 0.5])
    c = {"c_crossattn": torch.randn(2, 77, 8), "y": torch.randn(2, 2816),
         "transformer_options": {"sigmas": t, "cond_or_uncond": [0, 1]}}
    tiler = UNetTiler(TileSettings(unet_tile=24, unet_overlap=8, unet_batch=3))
    tiled = tiler(lambda xi, ti, ci: forge_apply_model(xi, ti, **ci), x, t, c)
    assert torch.allclose(tiled, forge_apply_model(x, t, **c), atol=1e-5)
    assert tiler.calls == 1


@torch.no_grad()
def test_a_real_unet_tiled_stays_close_to_full_frame():
    torch.manual_seed(2)
    unet = UNet2DConditionModel(sample_size=32, block_out_channels=(32, 64), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=8).eval()

    def model(x, t, cond):
        return unet(x, t, encoder_hidden_states=cond).sample

    x = torch.randn(2, 4, 64, 64)
    t = torch.tensor([500, 500])
    cond = torch.randn(2, 77, 32)
    full = model(x, t, cond)
    tiled = tiled_model_call(model, x, t, cond, tile=32, overlap=16, batch=4)
    assert tiled.shape == full.shape and torch.isfinite(tiled).all()
    assert psnr(full, tiled) > 20, psnr(full, tiled)


# -- when to tile ------------------------------------------------------------------------


def test_tiles_are_as_small_as_their_count_allows():
    grid = fitted_grid(128, 128, 96, 16)
    assert (len(grid), grid.tile_size) == (4, 72)  # 1.27x the work of one frame, not 2.25x with 96
    assert len(fitted_grid(256, 256, 96, 16)) == 9
    assert len(fitted_grid(64, 40, 96, 16)) == 1
    assert len(fitted_grid(16, 16, 96, 16)) == 1  # smaller than the overlap: one tile, no error
