"""Low-VRAM second pass: tiled VAE encode/decode and tiled (MultiDiffusion) UNet calls.

Everything here works on plain torch callables and modules, so the same code
runs on the WebUI's models and on diffusers' `AutoencoderKL`/`UNet2DConditionModel`.

Tiled VAE. The VAE is the memory hog of a large second pass (DESIGN: 9.5 GiB to
decode 2048x2048 in fp16), in its upsampling blocks at pixel resolution. Its
convolutions are local, so overlapping tiles blended with feathered weights come
close to the full frame, except for what sees the whole picture: the GroupNorm
statistics and the attention of the decoder's middle stage. That stage runs at
latent resolution (1/64 of the pixels), so it runs once, full frame, and every
tile starts from its output. The encoder mirrors it: its tiles stop before the
middle stage, which runs once on their blended output; its tiles' GroupNorms
share statistics recorded on a small copy of the whole image. (Which statistics
serve best was measured: docs/architecture.md, "Tiled VAE statistics".)

Tiled UNet. At each model call the latent is split into overlapping tiles that
go through the model in batches with the same conditioning, and the noise
predictions are blended with feathered weights (MultiDiffusion). Conditioning
the tiles cannot share (a spatial hint of another size, a batch of another
length: ControlNet, regional prompts) raises `CannotTile`; the installed wrapper
then runs that call full frame and says so once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .tiling import Grid, make_grid, run_tiled

#: pixels per latent unit of the Stable Diffusion VAEs (SD1.5, SD2, SDXL)
VAE_FACTOR = 8


@dataclass(frozen=True)
class TileSettings:
    """Tile sizes of a tiled second pass, in latent units (x8 for pixels)."""

    #: largest VAE tile: 96 = 768 px of image, 14% of a 2048^2 frame's activations
    #: (`fitted_grid` then makes the tiles as small as their count allows)
    vae_tile: int = 96
    #: the decoder's receptive field is wide, so overlap generously
    vae_overlap: int = 16
    #: largest UNet tile: 768 px, within what SD1.5 and SDXL handle in img2img
    unet_tile: int = 96
    unet_overlap: int = 16
    #: UNet tiles per model call
    unet_batch: int = 4

    @classmethod
    def for_tile_size(cls, pixels: int) -> TileSettings:
        """Settings for a user's tile size in image pixels (0 = our defaults)."""
        if pixels <= 0:
            return cls()
        tile = max(32, pixels // VAE_FACTOR)
        overlap = max(8, tile // 4)
        return cls(vae_tile=tile, vae_overlap=overlap, unet_tile=tile, unet_overlap=overlap)


def fitted_grid(width: int, height: int, max_tile: int, overlap: int) -> Grid:
    """The fewest tiles of at most `max_tile` that cover the latent, each as small as that count
    allows: a 128-wide latent in tiles of up to 96 becomes 2 tiles of 72, not 2 of 96 (1.27x the
    work of one frame instead of 2.25x)."""
    overlap = min(overlap, max_tile - 1)

    def side(length: int) -> int:
        if length <= max_tile:
            return length
        count = math.ceil((length - overlap) / (max_tile - overlap))
        return math.ceil((length - overlap) / count) + overlap

    tile = max(side(width), side(height))
    return make_grid(width, height, tile, min(overlap, tile - 1))


class CannotTile(Exception):
    """A model call whose conditioning the tiles cannot share; `str()` says why."""


# -- tiled VAE -------------------------------------------------------------------


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
    decoder: nn.Module | None = None,
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
    if len(grid) == 1:
        return decode(latent)
    stage = latent_stage(decoder) if decoder is not None else []
    if not stage:
        return run_tiled(decode, latent, grid, scale=VAE_FACTOR, should_stop=should_stop).to(latent.dtype)
    hook = stage[-1].register_forward_hook(_raise_captured)
    try:
        decode(latent)
        raise RuntimeError("the decoder never ran its middle stage")
    except _Captured as captured:
        middle = captured.output
    finally:
        hook.remove()
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


def _raise_captured(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
    raise _Captured(output)


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
    encoder: nn.Module | None = None,
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
    if len(grid) == 1:
        return encode(image)
    stage = latent_stage(encoder) if encoder is not None else []
    if not stage:
        return run_tiled(encode, image, grid, input_scale=VAE_FACTOR, should_stop=should_stop).to(image.dtype)

    def down_blocks(pixels: torch.Tensor) -> torch.Tensor:
        hook = stage[0].register_forward_pre_hook(_raise_captured_input)
        try:
            encode(pixels)
            raise RuntimeError("the encoder never reached its middle stage")
        except _Captured as captured:
            return captured.output
        finally:
            hook.remove()

    norms = SharedGroupNorm(encoder)
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


def _raise_captured_input(module: nn.Module, inputs: tuple[Any, ...]) -> None:
    raise _Captured(inputs[0])


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
    if encoder is not None:
        encode = encoder.forward

        def tiled_encoder(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return tiled_encode(lambda t: encode(t, *args, **kwargs), x, encoder=encoder, tile=settings.vae_tile,
                                overlap=settings.vae_overlap, should_stop=should_stop)

        replacements[encoder] = tiled_encoder
    if decoder is not None:
        decode = decoder.forward

        def tiled_decoder(z: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return tiled_decode(lambda t: decode(t, *args, **kwargs), z, decoder=decoder, tile=settings.vae_tile,
                                overlap=settings.vae_overlap, should_stop=should_stop)

        replacements[decoder] = tiled_decoder
    with _forwards(replacements):
        yield


# -- tiled UNet (MultiDiffusion) -------------------------------------------------------

#: rebuilds one model call's conditioning for k stacked tiles from their cropped spatial tensors
_Rebuild = Callable[[list[torch.Tensor], int], Any]


def _split_conditioning(cond: Any, x: torch.Tensor) -> tuple[list[torch.Tensor], _Rebuild]:
    """Spatial tensors of `cond` (cropped with the latent) and a function that rebuilds
    the conditioning of `k` stacked tiles from their cropped spatial tensors."""
    batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    spatial: list[torch.Tensor] = []

    def plan(value: Any) -> _Rebuild:
        if isinstance(value, dict):
            parts = {key: plan(v) for key, v in value.items()}
            return lambda crops, k: {key: part(crops, k) for key, part in parts.items()}
        if isinstance(value, (list, tuple)):
            items = [plan(v) for v in value]
            kind = type(value)
            return lambda crops, k: kind(item(crops, k) for item in items)
        if not isinstance(value, torch.Tensor):
            return lambda crops, k: value
        if value.dim() == 0:
            return lambda crops, k: value
        if value.shape[0] != batch:
            raise CannotTile(f"a conditioning of batch {value.shape[0]} for a latent batch of {batch} "
                             "(regional prompts?)")
        if value.dim() == 4 and value.shape[-2:] == (height, width):
            index = len(spatial)
            spatial.append(value)
            return lambda crops, k: crops[index]
        if value.dim() == 4 and value.shape[-2:] != (1, 1):
            raise CannotTile(f"a spatial conditioning of {value.shape[-1]}x{value.shape[-2]} for a "
                             f"{width}x{height} latent (a ControlNet-style hint?)")
        return lambda crops, k: value.repeat(k, *([1] * (value.dim() - 1)))

    return spatial, plan(cond)


def tiled_model_call(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    timesteps: torch.Tensor,
    cond: Any,
    *,
    tile: int = 96,
    overlap: int = 16,
    batch: int = 4,
    **kwargs: Any,
) -> torch.Tensor:
    """`model(x, timesteps, cond, **kwargs)` over overlapping latent tiles, blended.

    Tensors in `cond` whose batch matches the latent's are repeated per tile;
    those with the latent's height and width are cropped with it. Raises
    `CannotTile` for conditioning the tiles cannot share."""
    height, width = x.shape[-2:]
    grid = fitted_grid(width, height, tile, overlap)
    if len(grid) == 1:
        return model(x, timesteps, cond, **kwargs)
    spatial, rebuild = _split_conditioning(cond, x)
    if timesteps.dim() > 0 and timesteps.shape[0] != x.shape[0]:
        raise CannotTile(f"{timesteps.shape[0]} timesteps for a latent batch of {x.shape[0]}")
    channels = [x.shape[1]] + [s.shape[1] for s in spatial]
    # Spatial conditioning travels as extra channels, so it is cropped exactly like the latent.
    stacked = torch.cat([x] + [s.to(x.dtype) for s in spatial], dim=1) if spatial else x

    def tiles_call(tiles: torch.Tensor) -> torch.Tensor:
        k = tiles.shape[0] // x.shape[0]
        parts = list(torch.split(tiles, channels, dim=1))
        crops = [p.to(s.dtype) for p, s in zip(parts[1:], spatial, strict=True)]
        steps = timesteps.repeat(k) if timesteps.dim() > 0 else timesteps
        return model(parts[0], steps, rebuild(crops, k), **kwargs)

    return run_tiled(tiles_call, stacked, grid, batch_size=batch).to(x.dtype)


class UNetTiler:
    """Runs model calls `model(x, t, cond, ...)` tiled, or full frame where a host reason
    (`cannot_tile()`) or the conditioning says so; `on_fallback(reason)` hears the first one."""

    def __init__(self, settings: TileSettings, *, cannot_tile: Callable[[], str | None] = lambda: None,
                 on_fallback: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.cannot_tile = cannot_tile
        self.on_fallback = on_fallback
        #: model calls so far, tiled or not: a host can tell whether its hook was used at all
        self.calls = 0
        self._told = False

    def __call__(self, model: Callable[..., torch.Tensor], x: torch.Tensor, timesteps: torch.Tensor, cond: Any,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        reason = self.cannot_tile()
        if reason is None and not args:
            try:
                return tiled_model_call(model, x, timesteps, cond, tile=self.settings.unet_tile,
                                        overlap=self.settings.unet_overlap, batch=self.settings.unet_batch, **kwargs)
            except CannotTile as error:
                reason = str(error)
        if not self._told:
            self._told = True
            if self.on_fallback is not None:
                self.on_fallback(reason or "positional arguments the tiles cannot share")
        return model(x, timesteps, cond, *args, **kwargs)


@contextmanager
def tiled_unet(
    owner: Any,
    attribute: str = "apply_model",
    settings: TileSettings = TileSettings(),  # noqa: B008 - frozen, so one shared default is safe
    *,
    cannot_tile: Callable[[], str | None] = lambda: None,
    on_fallback: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Within the block, `owner.<attribute>(x, t, cond, ...)` runs tiled; always restored after.

    `cannot_tile()` is asked at each call for a host-level reason to run full frame
    (e.g. another extension hooked the UNet); `on_fallback(reason)` hears the first one."""
    original = getattr(owner, attribute)
    had_own = attribute in vars(owner)
    tiler = UNetTiler(settings, cannot_tile=cannot_tile, on_fallback=on_fallback)

    def call(x: torch.Tensor, timesteps: torch.Tensor, cond: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tiler(original, x, timesteps, cond, *args, **kwargs)

    setattr(owner, attribute, call)
    try:
        yield
    finally:
        if had_own:
            setattr(owner, attribute, original)
        else:
            delattr(owner, attribute)


# -- when to tile ------------------------------------------------------------------

#: Measured peaks per output pixel, 16-bit weights (DESIGN: VAE decode of 2048^2
#: took 9.5 GiB on an H100; an SDPA UNet step 1 GiB). 32-bit doubles them.
VAE_DECODE_BYTES_PER_PIXEL = 2432
UNET_STEP_BYTES_PER_PIXEL = 256
#: Leave this share of free memory for the allocator's fragmentation and the host.
MEMORY_HEADROOM = 0.8


def second_pass_bytes(width: int, height: int, *, dtype_bytes: int = 2, batch: int = 1) -> int:
    """Estimated peak bytes of an untiled second pass at `width` x `height` (the VAE decode,
    the larger of decode and a UNet step)."""
    per_pixel = max(VAE_DECODE_BYTES_PER_PIXEL, UNET_STEP_BYTES_PER_PIXEL) * dtype_bytes / 2
    return int(width * height * batch * per_pixel)


def needs_tiling(width: int, height: int, free_bytes: int | None, *, dtype_bytes: int = 2) -> bool:
    """Whether an untiled second pass would likely not fit in `free_bytes` (None: unknown, e.g. CPU)."""
    if free_bytes is None:
        return False
    return second_pass_bytes(width, height, dtype_bytes=dtype_bytes) > free_bytes * MEMORY_HEADROOM


@dataclass(frozen=True)
class MemoryFacts:
    """What the host knows about memory before a pass."""

    #: bytes free on the device; None where no reliable number exists (the CPU, MPS)
    free_bytes: int | None
    #: bytes per value of the VAE, whose decode is the pass's largest allocation
    dtype_bytes: int = 2


class TilingPolicy:
    """When the second pass runs tiled, and what running out of memory teaches: one per WebUI
    session, so that a size that ran out of memory once starts tiled from then on.

    `mode` is the parameters' `tiled`: auto, on or off.
    """

    def __init__(self) -> None:
        #: the fewest target pixels whose untiled pass ran out of memory
        self.out_of_memory_from: float = math.inf

    def batch_together(self, mode: str, size: tuple[int, int], count: int, memory: MemoryFacts) -> bool:
        """Whether `count` images go through one untiled pass: never tiled ("on"), and only where they fit."""
        if mode == "on" or count < 2:
            return False
        width, height = size
        return not needs_tiling(width, height * count, memory.free_bytes, dtype_bytes=memory.dtype_bytes)

    def tiled(self, mode: str, size: tuple[int, int], count: int, memory: MemoryFacts) -> bool:
        """Whether a pass over `count` images of `size` starts tiled (a batch that would need it runs
        one image at a time instead: `batch_together`)."""
        if mode != "auto":
            return mode == "on"
        width, height = size
        return count == 1 and (width * height >= self.out_of_memory_from
                               or needs_tiling(width, height, memory.free_bytes, dtype_bytes=memory.dtype_bytes))

    def retry_tiled(self, mode: str, size: tuple[int, int], count: int, *, was_tiled: bool) -> bool:
        """After an out-of-memory error: whether to run the pass again tiled. Only "auto" retries, only
        an untiled single image, and the size is remembered."""
        if mode != "auto" or was_tiled or count > 1:
            return False
        self.out_of_memory_from = min(self.out_of_memory_from, size[0] * size[1])
        return True
