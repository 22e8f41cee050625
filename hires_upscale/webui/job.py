"""One txt2img/img2img job's hires upscale, decided once in the script's `process` and kept on the
WebUI's processing object under one attribute (`job_of`, `attach`): the parameters, the plan whose
advice the user sees and which then runs, the checkpoints to come back to, and what became of each
image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..params import HiresParams
from ..pipeline import Result
from ..plan import Plan

#: The processing object's attribute that holds the job.
ATTRIBUTE = "_hires_upscale_job"
#: Marks a processing object as an inner pass (ours, or ADetailer's): never hires-upscale it again.
INNER_MARKERS = ("_hires_upscale_inner", "_ad_inner")


@dataclass(frozen=True)
class Failure:
    """Why an image stayed as the first pass made it; its infotext says so."""

    message: str


#: What became of one image.
Outcome = Result | Failure


@dataclass(frozen=True)
class HiresJob:
    params: HiresParams
    #: planned once from the job's size and the first pass's model family
    plan: Plan
    #: the checkpoint (its info) loaded for the first pass, loaded again after the passes
    checkpoint: Any
    #: (checkpoint, switch at) of the refiner the second pass switches to, where the WebUI's
    #: "Hires fix: which pass to enable refiner for" gives it to the second pass
    refiner: tuple[str, float] | None = None
    #: each image's outcome by its index in the job, from the batch hook until its image's hook
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    #: the per-image hook's calls so far, for WebUIs that do not say which image it is
    seen: list[int] = field(default_factory=lambda: [0])

    def next_index(self) -> int:
        """The image the per-image hook has now, counted (where the WebUI does not say)."""
        self.seen[0] += 1
        return self.seen[0] - 1


def job_of(p: Any) -> HiresJob | None:
    """The hires upscale of processing `p`, or None (off, refused, or an inner pass)."""
    return getattr(p, ATTRIBUTE, None)


def attach(p: Any, job: HiresJob | None) -> None:
    setattr(p, ATTRIBUTE, job)


def is_inner(p: Any) -> bool:
    return any(getattr(p, marker, False) for marker in INNER_MARKERS)


def mark_inner(p: Any) -> None:
    """Both inner-pass marks: ours keeps this extension out of the pass, ADetailer's keeps ADetailer out
    should a user take it off the kept-out list."""
    for marker in INNER_MARKERS:
        setattr(p, marker, True)
