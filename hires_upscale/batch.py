"""One loop for runs over image files: the command line, the tab's dropped images and folder mode.

One policy for all of them:
- an output that exists is skipped (a rerun resumes), replaced, or written under the next free
  name, as the caller says; an input's own file is never written (`folders.plan_jobs`);
- a file that cannot be used (unreadable, no PNG info, a model that fails on it) is reported and
  the run goes on with the next;
- an interrupt stops the run: the interrupted image is reported, never written, and a rerun redoes it;
- every PNG text chunk of the input is kept in a PNG output, the caller's text added over them (a
  JPEG or WebP output keeps the "parameters" text, as its EXIF UserComment).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from .errors import HiresUpscaleError, Interrupted, OutputExistsError
from .folders import Job
from .images import open_image, record_of, save_image
from .pipeline import Result

#: What to do where an output exists: skip it (resume), replace it, or write `<stem>-1.png`...
ExistingOutput = Literal["skip", "replace", "new name"]
#: The caller's work on one image: its result and the text chunks to write over the input's.
Upscale = Callable[[Image.Image, Path], tuple[Result, dict[str, str]]]

_MAX_NAME_ATTEMPTS = 10_000


@dataclass(frozen=True)
class Done:
    """An image of the run; `output` is None when it was interrupted (then nothing was written)."""

    source: Path
    result: Result
    output: Path | None


@dataclass(frozen=True)
class Skipped:
    """A file that was not upscaled: done before (`failed` False), or unusable, and why."""

    source: Path
    reason: str
    failed: bool


def run_files(jobs: Iterable[Job], upscale: Upscale, *, existing: ExistingOutput = "skip",
              should_stop: Callable[[], bool] = lambda: False) -> Iterator[Done | Skipped]:
    """Each job's image through `upscale`, written to its output; yields what happened to each, in order."""
    for job in jobs:
        if existing == "skip" and job.output.exists():
            yield Skipped(job.source, f"{job.output} exists: already done", failed=False)
            continue
        if should_stop():
            return
        try:
            image = open_image(job.source)
            result, text = upscale(image, job.source)
        except Interrupted:
            return
        except HiresUpscaleError as error:  # this file, not the run: say why and go on
            yield Skipped(job.source, str(error), failed=True)
            continue
        if result.interrupted:
            yield Done(job.source, result, None)
            return
        record = record_of(image)
        chunks = {**record.chunks, **text}
        if "parameters" not in chunks and record.user_comment:  # a JPEG's or WebP's EXIF record, kept in a PNG
            chunks["parameters"] = record.user_comment
        try:
            written = _write(result.image, job.output, chunks, existing)
        except OutputExistsError:  # another writer took the name meanwhile
            yield Skipped(job.source, f"{job.output} exists: already done", failed=False)
            continue
        yield Done(job.source, result, written)


def _write(image: Image.Image, output: Path, text: dict[str, str], existing: ExistingOutput) -> Path:
    if existing != "new name":
        return save_image(image, output, text=text, overwrite=existing == "replace")
    for attempt in range(_MAX_NAME_ATTEMPTS):
        candidate = output if attempt == 0 else output.with_name(f"{output.stem}-{attempt}{output.suffix}")
        try:
            return save_image(image, candidate, text=text)
        except OutputExistsError:
            continue
    raise OutputExistsError(output)
