"""When the second pass runs tiled, and what it tries after running out of memory: plain arithmetic
over memory facts the host gives, with no torch, so the script, the service and the UI import it
cheaply. The tiled VAE and UNet themselves are `tiled_vae` and `tiled_unet`.

The fallbacks are data. `TilingPolicy.ladder` lists the attempts for one second pass (all images
at once, then one at a time, then tiled), each with what the user is told on reaching it, and
the remedy to give when even the last one runs out of memory; `TilingPolicy.climb` runs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .errors import OutOfMemory

#: pixels per latent unit of the Stable Diffusion VAEs (SD1.5, SD2, SDXL)
VAE_FACTOR = 8

#: Estimated peaks per output pixel, 16-bit weights, from the seed design's H100 note (shared/DESIGN.md,
#: outside this repository; random-weight models: a VAE decode of 2048^2 took 9.5 GiB, an SDPA UNet
#: step 1 GiB); 32-bit doubles them. Estimates,
#: not measured on this machine: they only decide when "auto" starts tiled, and an out-of-memory
#: error corrects them for the session (`TilingPolicy.out_of_memory_from`).
VAE_DECODE_BYTES_PER_PIXEL = 2432
UNET_STEP_BYTES_PER_PIXEL = 256
#: The share of free memory a pass may plan to use; the rest is left to the allocator's fragmentation and the host.
MEMORY_HEADROOM = 0.8

Done = TypeVar("Done")


@dataclass(frozen=True)
class TileSettings:
    """Tile sizes of a tiled second pass, in latent units (x8 for pixels)."""

    #: largest VAE tile: 96 = 768 px of image, 14% of a 2048^2 frame's activations
    #: (`tiling.fitted_grid` then makes the tiles as small as their count allows)
    vae_tile: int = 96
    #: the decoder's receptive field is wide, so overlap generously
    vae_overlap: int = 16
    #: largest UNet tile: 768 px, within what SD1.5 and SDXL handle in img2img
    unet_tile: int = 96
    unet_overlap: int = 16
    #: UNet tiles per model call
    unet_batch: int = 4

    @classmethod
    def for_tile_size(cls, pixels: int, family_tile: int = 768) -> TileSettings:
        """Settings for a user's tile size in image pixels (0 = our defaults, with UNet tiles of
        `family_tile` pixels: the model family's own, `resolution.ModelFamily.tile`)."""
        if pixels <= 0:
            return cls(unet_tile=max(32, family_tile // VAE_FACTOR))
        tile = max(32, pixels // VAE_FACTOR)
        overlap = max(8, tile // 4)
        return cls(vae_tile=tile, vae_overlap=overlap, unet_tile=tile, unet_overlap=overlap)


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


@dataclass(frozen=True)
class Attempt:
    """One way to run a second pass over a batch's images."""

    #: all images in one img2img; else one at a time
    together: bool
    tiled: bool
    #: advice code, field and message for the user when the run comes to this attempt because the
    #: one before ran out of memory ("" for the first attempt)
    code: str = ""
    after_failure: str = ""
    field: str = "second pass"
    #: reaching it teaches the policy that this size runs out of memory untiled (auto mode)
    remember: bool = False


@dataclass(frozen=True)
class Ladder:
    """The attempts of one second pass, in order, and what to change when the last runs out of memory."""

    size: tuple[int, int]
    attempts: tuple[Attempt, ...]
    remedy: str


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

    def tiled(self, mode: str, size: tuple[int, int], memory: MemoryFacts) -> bool:
        """Whether one image's pass at `size` starts tiled."""
        if mode != "auto":
            return mode == "on"
        width, height = size
        return (width * height >= self.out_of_memory_from
                or needs_tiling(width, height, memory.free_bytes, dtype_bytes=memory.dtype_bytes))

    def ladder(self, mode: str, size: tuple[int, int], count: int, memory: MemoryFacts, *,
               cannot_tile: str | None = None) -> Ladder:
        """The attempts for `count` images at `size`: together where they fit untiled, then one at a
        time (tiled where the mode or memory says; a host that `cannot_tile` then says it ran untiled),
        then, in "auto" and where the host can tile, tiled after an untiled image ran out of memory."""
        width, height = size
        attempts: list[Attempt] = []
        if self.batch_together(mode, size, count, memory):
            attempts.append(Attempt(together=True, tiled=False))
        first_tiled = self.tiled(mode, size, memory)
        attempts.append(Attempt(
            together=False, tiled=first_tiled, code="batch_after_oom" if attempts else "",
            after_failure=(f"The batch's second pass ran out of memory at {count}x {width}x{height}; its images "
                           "ran one at a time.") if attempts else ""))
        if mode == "auto" and not first_tiled and cannot_tile is None:
            attempts.append(Attempt(
                together=False, tiled=True, code="tiled_after_oom", field="tiled", remember=True,
                after_failure=(f"The second pass ran out of memory at {width}x{height}; it ran again tiled (tiled "
                               "VAE and UNet), and will start tiled at this size from now on.")))
        if cannot_tile is not None:
            remedy = f"set a smaller target (this extension cannot tile it here: {cannot_tile})"
        elif attempts[-1].tiled:
            remedy = "even tiled: set a smaller tile size or a smaller target"
        else:
            remedy = "set Tiled to auto or on, or a smaller target"
        return Ladder(size, tuple(attempts), remedy)

    def climb(self, ladder: Ladder, count: int, run: Callable[[Sequence[int], Attempt], list[Done]],
              reached: Callable[[Attempt], None]) -> list[Done]:
        """`run(indices, attempt)` over items 0..count-1, attempt after attempt: a `together` attempt
        takes them all at once, another one at a time (an item done stays done). An `OutOfMemory`
        moves on to the next attempt, which `reached(attempt)` hears first; the last one's is raised
        again with the ladder's remedy."""
        done: dict[int, Done] = {}
        for level, attempt in enumerate(ladder.attempts):
            if level:
                if attempt.remember:
                    self.out_of_memory_from = min(self.out_of_memory_from, ladder.size[0] * ladder.size[1])
                reached(attempt)
            try:
                if attempt.together:
                    done.update(enumerate(run(range(count), attempt)))
                for index in range(count):
                    if index not in done:
                        done[index] = run([index], attempt)[0]
                return [done[index] for index in range(count)]
            except OutOfMemory as error:
                failure = error
        raise OutOfMemory(failure.stage, ladder.size, ladder.remedy) from failure
