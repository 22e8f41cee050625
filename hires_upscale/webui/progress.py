"""The WebUI's job state as our stages use it: its progress text and bar, the job count its ETA
follows, and whether the user pressed Interrupt or Skip. The same on every host."""

from __future__ import annotations

from modules import shared


def should_stop() -> bool:
    state = shared.state
    return bool(state.interrupted or state.skipped or getattr(state, "stopping_generation", False))


def add_job() -> None:
    """Tell the progress bar (and its ETA) one more job, one of our stages, is coming."""
    state = shared.state
    state.job_count = max(state.job_count, 0) + 1  # -1 means "not counted yet" (our own tab and API jobs)


def next_job() -> None:
    shared.state.nextjob()


def report(text: str | None, done: int = 0, total: int = 0) -> None:
    """The WebUI's progress text and bar for the stage at hand."""
    state = shared.state
    state.textinfo = text
    if total:
        state.sampling_steps, state.sampling_step = total, done
