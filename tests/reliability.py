"""docs/reliability.md from the test run itself: what was tried, what was expected, what happened.

A hardening test says what it tries with a marker:

    @pytest.mark.reliability(area="API", tried="...", expected="...")

This plugin collects the outcome of every marked test (passed, failed, or skipped
with the reason) and, only when HIRES_UPSCALE_RELIABILITY_REPORT names a file,
writes them there as a markdown table at the end of the session, after a summary
of every test of the run (marked or not) by the WebUI it ran against: README's
"Tested WebUI versions" rows link to that summary. Nothing in it is written by
hand, so it cannot claim more than the run showed.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ENV = "HIRES_UPSCALE_RELIABILITY_REPORT"
MARKER = "reliability"


@dataclass
class Row:
    """One marked test function; its parametrized cases are counted together."""

    area: str
    tried: str
    expected: str
    test: str
    webui: bool
    #: case id -> "passed" / "failed" / "error" / "skipped: reason"
    outcomes: dict[str, str] = field(default_factory=dict)

    def result(self) -> str:
        if not self.outcomes:
            return "not run"
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        if len(self.outcomes) == 1:
            return next(iter(self.outcomes.values()))
        failed = sorted(case for case, outcome in self.outcomes.items() if outcome in ("failed", "error"))
        text = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        return text + (f" ({', '.join(failed)})" if failed else "")


class ReliabilityReport:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.rows: dict[str, Row] = {}
        self.case_of: dict[str, tuple[str, str]] = {}  # node id -> (row key, case id)
        self.host_of: dict[str, str] = {}  # node id -> the WebUI it ran against, or "unit tier"
        #: host -> outcome ("passed", "failed", "error", "skipped: reason") -> count, for every test
        self.tally: dict[str, dict[str, int]] = {}

    @pytest.hookimpl(trylast=True)  # after tests/webui's conftest has added its marks
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            callspec = getattr(item, "callspec", None)
            self.host_of[item.nodeid] = (callspec.params.get("webui") if callspec is not None else None) or (
                "real WebUI" if item.get_closest_marker("webui") is not None else "unit tier")
            mark = item.get_closest_marker(MARKER)
            if mark is None:
                continue
            missing = {"area", "tried", "expected"} - set(mark.kwargs)
            if missing:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.reliability needs {', '.join(sorted(missing))}")
            key = item.nodeid.split("[", 1)[0]
            row = self.rows.setdefault(key, Row(mark.kwargs["area"], mark.kwargs["tried"], mark.kwargs["expected"],
                                                key, item.get_closest_marker("webui") is not None))
            case = getattr(item, "callspec", None)
            self.case_of[item.nodeid] = (key, case.id if case is not None else "")
            row.outcomes.setdefault(self.case_of[item.nodeid][1], "not run")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            outcome = "skipped: " + reason.removeprefix("Skipped: ")
        elif report.failed:
            outcome = "failed" if report.when == "call" else "error"
        elif report.when == "call":
            outcome = "passed"
        else:
            return
        if report.when != "teardown" or outcome == "error":
            counts = self.tally.setdefault(self.host_of.get(report.nodeid, "unit tier"), {})
            counts[outcome] = counts.get(outcome, 0) + 1
        if report.nodeid in self.case_of:
            key, case = self.case_of[report.nodeid]
            self.rows[key].outcomes[case] = outcome

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        target = os.environ.get(ENV)
        if target and self.rows:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.markdown(), encoding="utf-8")

    def webui_tier(self) -> str:
        rows = [r for r in self.rows.values() if r.webui]
        if not rows:
            return "not collected in this run"
        skipped = [o for r in rows for o in r.outcomes.values() if o.startswith("skipped")]
        if skipped and len(skipped) == sum(len(r.outcomes) for r in rows):
            return skipped[0]
        harness = sys.modules.get("harness")  # tests/webui/harness.py, loaded by that tier's conftest
        if harness is not None:
            found = [checkout for _host, checkout, _why in harness.find_checkouts() if checkout is not None]
            if found:
                return "ran against " + " and ".join(
                    f"{c.host.title} {c.version} at {c.root}" for c in found)
        return "ran"

    def summary(self) -> list[str]:
        lines = ["| ran against | passed | failed | skipped, and why |", "|---|---|---|---|"]
        names = {}
        harness = sys.modules.get("harness")  # tests/webui/harness.py, loaded by that tier's conftest
        if harness is not None:
            names = {host.kind: f"{host.title} {checkout.version}" for host, checkout, _ in harness.find_checkouts()
                     if checkout is not None}
        for kind, counts in sorted(self.tally.items(), key=lambda item: item[0] != "unit tier"):
            host = names.get(kind, kind)
            failed = counts.get("failed", 0) + counts.get("error", 0)
            skips = sorted((outcome.removeprefix("skipped: "), n) for outcome, n in counts.items()
                           if outcome.startswith("skipped"))
            why = "; ".join(f"{n}x {reason}" for reason, n in skips) or "none"
            lines.append("| " + " | ".join((host, str(counts.get("passed", 0)), str(failed),
                                              why.replace("|", "\\|").replace("\n", " "))) + " |")
        return lines

    def markdown(self) -> str:
        args = " ".join(self.config.invocation_params.args)
        lines = [
            "# Reliability: the last full test run, and what its hardening tests tried",
            "",
            "Generated by the test run (tests/reliability.py), not written by hand:",
            "",
            "```",
            f"{ENV}=docs/reliability.md python -m pytest {args}".rstrip(),
            "```",
            "",
            f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"- Python {sys.version.split()[0]}, pytest {pytest.__version__}",
            f"- real-WebUI tier (tests/webui): {self.webui_tier()}",
            "",
            "## Run summary",
            "",
            "Every test of the run, marked or not, by the WebUI it ran against:",
            "",
            *self.summary(),
            "",
            "## Hostile and broken inputs",
            "",
            "Each row is one test; parametrized tests count their cases.",
            "",
            "| area | what was tried | expected | result | test |",
            "|---|---|---|---|---|",
        ]
        for row in sorted(self.rows.values(), key=lambda r: (r.area, r.test)):
            cells = (row.area, row.tried, row.expected, row.result(), f"`{row.test}`")
            lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
        return "\n".join(lines) + "\n"


def register(config: pytest.Config) -> None:
    """Called from tests/conftest.py's pytest_configure."""
    config.pluginmanager.register(ReliabilityReport(config), "hires_upscale_reliability")
