"""When the second pass tiles, and the attempts after running out of memory: the policy and its
ladder as plain data, without a WebUI or torch."""

from __future__ import annotations

import pytest

from hires_upscale.errors import OutOfMemory
from hires_upscale.memory import MemoryFacts, TileSettings, TilingPolicy, needs_tiling, second_pass_bytes
from hires_upscale.resolution import FAMILIES

CPU = MemoryFacts(None)  # no reliable number: never tiles on a guess
ROOMY = MemoryFacts(10 * second_pass_bytes(1024, 1024))
TIGHT = MemoryFacts(second_pass_bytes(1024, 1024) // 2)


def test_auto_mode_tiles_only_what_would_not_fit():
    assert not needs_tiling(4096, 4096, None)  # CPU: no number to go by; the out-of-memory retry covers it
    assert needs_tiling(2048, 2048, 8 * 1024**3)
    assert not needs_tiling(1024, 1024, 8 * 1024**3)
    assert not needs_tiling(1024, 1024, 8 * 1024**3, dtype_bytes=4)
    assert needs_tiling(2048, 1024, 8 * 1024**3, dtype_bytes=4)


def test_a_users_tile_size_in_pixels_becomes_latent_tiles():
    assert TileSettings.for_tile_size(0) == TileSettings()
    assert TileSettings.for_tile_size(0, FAMILIES["sdxl"].tile).unet_tile == 128  # SDXL's own 1024 px
    assert TileSettings.for_tile_size(0, FAMILIES["sdxl"].tile).vae_tile == TileSettings().vae_tile
    settings = TileSettings.for_tile_size(768)
    assert (settings.vae_tile, settings.unet_tile, settings.vae_overlap) == (96, 96, 24)
    assert TileSettings.for_tile_size(64).unet_tile == 32  # never smaller than 256 px


def shape(ladder) -> list[tuple[bool, bool]]:
    return [(a.together, a.tiled) for a in ladder.attempts]


def test_the_ladder_tries_together_then_one_at_a_time_then_tiled():
    policy = TilingPolicy()
    ladder = policy.ladder("auto", (1024, 1024), 4, ROOMY)
    assert shape(ladder) == [(True, False), (False, False), (False, True)]
    assert [a.code for a in ladder.attempts] == ["", "batch_after_oom", "tiled_after_oom"]
    assert "4x 1024x1024" in ladder.attempts[1].after_failure and ladder.attempts[2].remember
    assert ladder.remedy == "even tiled: set a smaller tile size or a smaller target"
    # a batch that would not fit untiled starts one at a time; a single image has no batch attempt
    assert shape(policy.ladder("auto", (1024, 1024), 12, ROOMY))[0] == (False, False)
    assert shape(policy.ladder("auto", (1024, 1024), 1, ROOMY)) == [(False, False), (False, True)]
    # what does not fit starts tiled, and nothing is left to retry
    assert shape(policy.ladder("auto", (1024, 1024), 1, TIGHT)) == [(False, True)]


def test_the_mode_and_the_host_bound_the_ladder():
    policy = TilingPolicy()
    assert shape(policy.ladder("on", (64, 64), 2, ROOMY)) == [(False, True)]  # "on" never batches untiled
    off = policy.ladder("off", (4096, 4096), 2, TIGHT)
    assert shape(off) == [(False, False)] and off.remedy == "set Tiled to auto or on, or a smaller target"
    # tiling asked of a host that cannot: one attempt, whose pass says it ran untiled, and no retry
    cannot = policy.ladder("on", (1024, 1024), 1, ROOMY, cannot_tile="flux is not a UNet")
    assert shape(cannot) == [(False, True)]
    assert cannot.remedy == "set a smaller target (this extension cannot tile it here: flux is not a UNet)"
    assert shape(policy.ladder("auto", (1024, 1024), 1, ROOMY, cannot_tile="no")) == [(False, False)]


def failing(sizes_failing: set[tuple[bool, bool]], runs: list):
    """A second pass that runs out of memory for the attempts of these shapes."""

    def run(indices, attempt):
        runs.append((list(indices), attempt.together, attempt.tiled))
        if (attempt.together, attempt.tiled) in sizes_failing:
            raise OutOfMemory("second pass", (1024, 1024), "")
        return [f"image {i} {'tiled' if attempt.tiled else 'untiled'}" for i in indices]

    return run


def test_climbing_moves_on_after_running_out_of_memory_and_says_so():
    policy = TilingPolicy()
    ladder = policy.ladder("auto", (1024, 1024), 3, ROOMY)
    runs: list = []
    heard: list = []
    done = policy.climb(ladder, 3, failing({(True, False), (False, False)}, runs), heard.append)
    assert done == ["image 0 tiled", "image 1 tiled", "image 2 tiled"]
    # together, then image 0 alone untiled, then from there on tiled: one untiled failure is enough
    assert runs == [([0, 1, 2], True, False), ([0], False, False), ([0], False, True), ([1], False, True),
                    ([2], False, True)]
    assert [a.code for a in heard] == ["batch_after_oom", "tiled_after_oom"]
    # the size is remembered for the session: the next ladder at it starts tiled
    assert policy.out_of_memory_from == 1024 * 1024
    assert shape(policy.ladder("auto", (1024, 1024), 1, CPU)) == [(False, True)]
    assert shape(policy.ladder("auto", (1024, 768), 1, CPU))[0] == (False, False)  # smaller: untiled still
    assert shape(TilingPolicy().ladder("auto", (1024, 1024), 1, CPU))[0] == (False, False)  # another session


def test_images_done_stay_done_and_the_last_failure_carries_the_remedy():
    policy = TilingPolicy()
    runs: list = []
    ladder = policy.ladder("auto", (1024, 1024), 2, ROOMY)

    def second_image_never_fits(indices, attempt):
        runs.append((list(indices), attempt.tiled))
        if attempt.together or indices == [1]:
            raise OutOfMemory("second pass", (1024, 1024), "")
        return ["done"]

    with pytest.raises(OutOfMemory) as raised:
        policy.climb(ladder, 2, second_image_never_fits, lambda attempt: None)
    assert str(raised.value) == ("the second pass ran out of memory at 1024x1024: even tiled: set a smaller tile "
                                 "size or a smaller target")
    assert runs == [([0, 1], False), ([0], False), ([1], False), ([1], True)]  # image 0 is not run again
