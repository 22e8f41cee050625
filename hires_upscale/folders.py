"""Which files a batch reads and writes, and the folders it may touch.

Pure path logic, shared by the command line, the WebUI tab and the API: outputs
are named `<stem>.png` in the output folder, never an input's own path, and
paths from users must resolve (symlinks followed) inside an allowed root.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import HiresUpscaleError
from .images import IMAGE_SUFFIXES, output_suffix


class PathNotAllowedError(HiresUpscaleError):
    """A path given by a user resolves outside every allowed folder."""

    def __init__(self, path: str | os.PathLike[str], roots: Sequence[Path],
                 reason: str = "it is outside the allowed folders") -> None:
        allowed = ", ".join(str(r) for r in roots) or "(none configured)"
        # repr: a path from a request may hold control characters that must not reach a log raw
        super().__init__(f"{str(path)!r}: {reason}; allowed: {allowed}")
        self.path = str(path)


class OutputClashError(HiresUpscaleError):
    """Two inputs would write one output, or an output would replace its input."""


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path


def resolve_inside(path: str | os.PathLike[str], roots: Sequence[Path], *, base: Path | None = None) -> Path:
    """The real path of `path` (relative ones from `base`) if it lies inside one of `roots`."""
    try:
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = (base or Path.cwd()) / candidate
        real = candidate.resolve()
    except (ValueError, RuntimeError, OSError) as error:
        # A NUL byte (ValueError), "~nosuchuser" (RuntimeError) or a loop: unusable, and said so.
        raise PathNotAllowedError(path, roots, f"it is not a usable path ({error})") from None
    for root in roots:
        real_root = Path(root).expanduser().resolve()
        if real == real_root or real_root in real.parents:
            return real
    raise PathNotAllowedError(path, roots)


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name (hidden and temporary files skipped)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def plan_jobs(sources: Iterable[Path], output_dir: Path, *, same_format: bool = False) -> list[Job]:
    """One job per source, output `output_dir/<stem>.png` (with `same_format`, a JPEG or WebP input's
    own suffix); refuses clashes before any work starts."""
    jobs = [Job(source, output_dir / f"{source.stem}{output_suffix(source, same_format)}") for source in sources]
    seen: dict[Path, Path] = {}
    for job in jobs:
        output = job.output.resolve()
        if output == job.source.resolve():
            raise OutputClashError(f"{job.output} would replace its input; choose another output folder")
        if output in seen:
            raise OutputClashError(f"{seen[output]} and {job.source} would both write {job.output}")
        seen[output] = job.source
    return jobs
