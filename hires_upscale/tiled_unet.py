"""The tiled UNet of the low-VRAM second pass (MultiDiffusion), over any model call
`model(x, t, cond, ...)`.

At each model call the latent is split into overlapping tiles that go through the model in
batches with the same conditioning, and the noise predictions are blended with feathered weights.
Conditioning the tiles cannot share (a spatial hint of another size, a batch of another length:
ControlNet, regional prompts) raises `CannotTile`; the installed wrapper then runs that call full
frame and says so once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .memory import TileSettings
from .tiling import fitted_grid, run_tiled


class CannotTile(Exception):
    """A model call whose conditioning the tiles cannot share; `str()` says why."""


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


