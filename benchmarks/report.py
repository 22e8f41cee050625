"""Where benchmark results go: printed, as JSON, and as a section of docs/benchmarks.md."""

from __future__ import annotations

import json
from pathlib import Path


def write_section(path: Path, name: str, text: str) -> None:
    """Replace (or append) the block between `<!-- name:start -->` and `<!-- name:end -->`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text}\n{end}"
    header = "# Benchmarks\n\nWritten by the benchmark commands; do not edit between the markers.\n"
    current = path.read_text() if path.exists() else header
    if start in current and end in current:
        before, rest = current.split(start, 1)
        current = before + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(current)


def publish(out: Path, name: str, report: dict, text: str) -> None:
    """Print `text`, write `benchmarks-<name>.json` and the `<name>` section of benchmarks.md in `out`."""
    print()
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"benchmarks-{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    write_section(out / "benchmarks.md", name, text)
