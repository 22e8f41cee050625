"""The tiled VAE of the low-VRAM second pass, over plain torch modules (the WebUI's VAEs and
diffusers' `AutoencoderKL` alike).

The VAE is the memory hog of a large second pass (the seed design's H100 note, an estimate: 9.5 GiB
to decode 2048x2048 in fp16), in its blocks at pixel resolution. Its convolutions are local, so
overlapping tiles blended with feathered weights come close to the full frame, except for what sees
the whole picture: the GroupNorm statistics and the attention of the middle stage. That stage runs at latent resolution
(1/64 of the pixels), so it runs once, full frame. The decoder's tiles start from its output; the
encoder's tiles stop before it, and it runs once on their blended output, the tiles' GroupNorms
sharing statistics recorded on a small copy of the whole image. (Which statistics serve best was
measured: docs/architecture.md, "Tiled VAE statistics".)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .memory import VAE_FACTOR, TileSettings
from .tiling import fitted_grid, run_tiled


class _Captured(Exception):
    """Stops a VAE's forward at its middle stage, carrying the tensor met there."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__("latent stage captured")
        self.output = output


def latent_stage(coder: nn.Module) -> list[nn.Module]:
    """The modules of a VAE encoder's or decoder's middle stage (at latent resolution, with
    its attention), in call order: the stage itself where it has a forward (diffusers'
    `mid_block`), else its children, which the WebUI's VAEs call one by one (`mid.block_1`,
    `attn_1`, `block_2`). Empty when there is no such stage."""
    for name in ("mid_block", "mid"):
        stage = getattr(coder, name, None)
        if isinstance(stage, nn.Module):
            if type(stage).forward is not nn.Module.forward:
                return [stage]
            return list(stage.children())
    return []


@contextmanager
def _forwards(replacements: dict[nn.Module, Callable[..., Any]]) -> Iterator[None]:
    """Replace modules' forwards within the block; then put back exactly what was there
    (another extension's own wrapper included), or the class's forward."""
    before = {module: vars(module).get("forward") for module in replacements}
    for module, forward in replacements.items():
        module.forward = forward
    try:
        yield
    finally:
        for module, forward in before.items():
            if forward is None:
                del module.forward
            else:
                module.forward = forward


def tiled_decode(
    decode: Callable[[torch.Tensor], torch.Tensor],
    latent: torch.Tensor,
    *,
    coder: nn.Module | None = None,
    tile: int = 96,
    overlap: int = 16,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """`decode(latent)` of a VAE decoder (latent -> pixels x 8), tile by tile.

    The decoder's middle stage (`latent_stage`: GroupNorms and the attention that
    sees the whole picture) runs once on the full latent, which is cheap at latent
    resolution; the tiles then start from its output, so every tile shares its
    global statistics and attention, and only the upsampling blocks are tiled.
    Their GroupNorms keep per-tile statistics: the upsampling blocks make fine
    detail whose statistics a smaller copy does not have, and recording them on
    one measured worse than per tile (docs/architecture.md)."""
    height, width = latent.shape[-2:]
    grid = fitted_grid(width, height, tile, overlap)
    stage = latent_stage(coder) if coder is not None else []
    whole = _without_stage(decode, latent, grid, stage, should_stop, scale=VAE_FACTOR)
    if whole is not None:
        return whole
    middle = _met(lambda: decode(latent), stage[-1], entering=False)
    channels = latent.shape[1]
    # The middle stage's output travels beside the latent as extra channels, so each tile gets its crop.
    stacked = torch.cat([latent, middle.to(latent.dtype)], dim=1)
    current: list[torch.Tensor] = []

    def first(*args: Any, **kwargs: Any) -> torch.Tensor:
        return current[0]

    def passthrough(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return x

    def one_tile(tiles: torch.Tensor) -> torch.Tensor:
        current[:] = [tiles[:, channels:].to(middle.dtype)]
        return decode(tiles[:, :channels].contiguous())

    with _forwards({stage[0]: first, **{module: passthrough for module in stage[1:]}}):
        out = run_tiled(one_tile, stacked, grid, scale=VAE_FACTOR, should_stop=should_stop)
    return out.to(latent.dtype)


def _without_stage(call: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grid: Any, stage: list[nn.Module],
                   should_stop: Callable[[], bool] | None, **scale: int) -> torch.Tensor | None:
    """The whole result where the middle stage needs no sharing: one tile, or a VAE without such a
    stage (plain tiles); None where the caller splits at the stage."""
    if len(grid) == 1:
        return call(x)
    if not stage:
        return run_tiled(call, x, grid, should_stop=should_stop, **scale).to(x.dtype)
    return None


def _met(call: Callable[[], Any], module: nn.Module, *, entering: bool) -> torch.Tensor:
    """The tensor `module` gets (`entering`) or gives when `call()` runs it; the call stops there."""

    def stop_entering(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        raise _Captured(inputs[0])

    def stop_leaving(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        raise _Captured(output)

    hook = module.register_forward_pre_hook(stop_entering) if entering else module.register_forward_hook(stop_leaving)
    try:
        call()
        raise RuntimeError(f"the VAE never ran its middle stage ({type(module).__name__})")
    except _Captured as captured:
        return captured.output
    finally:
        hook.remove()


class SharedGroupNorm:
    """Records the statistics of the GroupNorm calls in `module` on one pass and replays
    them, call by call, on later passes (the tiles), so every tile shares one tone."""

    def __init__(self, module: nn.Module) -> None:
        self.norms = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
        self.stats: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._next = 0

    def recording(self) -> Any:
        self.stats = []
        return _forwards({norm: _bind(self._record, norm) for norm in self.norms})

    def replaying(self) -> Any:
        return _forwards({norm: _bind(self._replay, norm) for norm in self.norms})

    def rewind(self) -> None:
        """Replay from the first call again (once per tile)."""
        self._next = 0

    def _record(self, norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x.reshape(x.shape[0], norm.num_groups, -1).float(), dim=-1, unbiased=False)
        self.stats.append((mean, var))
        return nn.functional.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)

    def _replay(self, norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        if self._next >= len(self.stats):
            raise RuntimeError("a tile made more GroupNorm calls than the recorded pass")
        mean, var = self.stats[self._next]
        self._next += 1
        grouped = x.reshape(x.shape[0], norm.num_groups, -1)
        # in the activation's dtype: a float32 copy of a large fp16 activation is what tiling saves
        out = ((grouped - mean[..., None].to(x.dtype)) * torch.rsqrt(var + norm.eps)[..., None].to(x.dtype))
        out = out.reshape(x.shape)
        if norm.affine:
            view = (1, -1) + (1,) * (x.dim() - 2)
            out = out * norm.weight.view(view) + norm.bias.view(view)
        return out


def _bind(forward: Callable[[nn.GroupNorm, torch.Tensor], torch.Tensor], norm: nn.GroupNorm) -> Callable:
    return lambda x: forward(norm, x)


def _fit_within(height: int, width: int, limit: int) -> tuple[int, int]:
    factor = min(1.0, limit / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def tiled_encode(
    encode: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    *,
    coder: nn.Module | None = None,
    tile: int = 96,
    overlap: int = 16,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """`encode(image)` of a VAE encoder (pixels -> latent / 8), tile by tile; `tile` and
    `overlap` in latent units.

    Mirror of `tiled_decode`: the downsampling blocks run tile by tile up to the
    encoder's middle stage, their outputs are blended into one latent-resolution
    map, and the middle stage and what follows run once on it, full frame. The
    downsampling blocks' GroupNorms use statistics recorded on the whole image
    seen small (one tile's worth of pixels): per-tile statistics shift each tile's
    tone with its content (sky, skin), and the encoder's early statistics follow
    colours, which a smaller copy keeps."""
    if image.shape[-2] % VAE_FACTOR or image.shape[-1] % VAE_FACTOR:
        raise ValueError(f"an image to encode must be a multiple of {VAE_FACTOR} px, "
                         f"got {image.shape[-1]}x{image.shape[-2]}")
    grid = fitted_grid(image.shape[-1] // VAE_FACTOR, image.shape[-2] // VAE_FACTOR, tile, overlap)
    stage = latent_stage(coder) if coder is not None else []
    whole = _without_stage(encode, image, grid, stage, should_stop, input_scale=VAE_FACTOR)
    if whole is not None:
        return whole

    def down_blocks(pixels: torch.Tensor) -> torch.Tensor:
        return _met(lambda: encode(pixels), stage[0], entering=True)

    norms = SharedGroupNorm(coder)
    small_h, small_w = _fit_within(grid.height, grid.width, grid.tile_size)
    small = nn.functional.interpolate(image, size=(small_h * VAE_FACTOR, small_w * VAE_FACTOR), mode="bilinear",
                                      antialias=True, align_corners=False)
    with norms.recording():
        down_blocks(small)  # stops at the middle stage: records the downsampling blocks' calls only
    del small

    def one_tile(pixels: torch.Tensor) -> torch.Tensor:
        norms.rewind()
        return down_blocks(pixels)

    with norms.replaying():
        features = run_tiled(one_tile, image, grid, input_scale=VAE_FACTOR, should_stop=should_stop)
    middle = stage[0].forward

    def from_features(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return middle(features.to(x.dtype), *args, **kwargs)

    # The downsampling blocks run once more on one latent unit's worth of pixels, and their output is ignored.
    with _forwards({stage[0]: from_features}):
        return encode(image[..., :VAE_FACTOR, :VAE_FACTOR])


@contextmanager
def tiled_vae(
    encoder: nn.Module | None,
    decoder: nn.Module | None,
    settings: TileSettings = TileSettings(),  # noqa: B008 - frozen, so one shared default is safe
    *,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[None]:
    """Within the block, `encoder(x)` and `decoder(z)` run tiled; always restored after."""
    replacements: dict[nn.Module, Callable[..., Any]] = {}
    for coder, tiled, name in ((encoder, tiled_encode, "tiled_encoder"), (decoder, tiled_decode, "tiled_decoder")):
        if coder is not None:
            replacements[coder] = _tiled_forward(coder, tiled, name, settings, should_stop)
    with _forwards(replacements):
        yield


def _tiled_forward(coder: nn.Module, tiled: Callable[..., torch.Tensor], name: str, settings: TileSettings,
                   should_stop: Callable[[], bool] | None) -> Callable[..., torch.Tensor]:
    """`coder`'s forward as it is now, run through `tiled` (`tiled_encode` or `tiled_decode`)."""
    forward = coder.forward

    def run(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tiled(lambda t: forward(t, *args, **kwargs), x, coder=coder, tile=settings.vae_tile,
                     overlap=settings.vae_overlap, should_stop=should_stop)

    run.__name__ = name
    return run
