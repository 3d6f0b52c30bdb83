"""The run lifecycle, as the handlers in app.py report it: a run started, was skipped, finished; an event was
applied. Features that show runs somewhere (the status row in Dynamics) implement RunObserver; the engine and
the handlers only call it, so nothing here knows who listens.

An observer shows runs, it does not run them: the handlers catch and log what an observer raises, and a run's
outcome never depends on one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

SUCCEEDED = "succeeded"
PARTIAL = "partial"  # finished, with batches dead-lettered (their members are retried by the next run)
FAILED = "failed"
OUTCOMES = (SUCCEEDED, PARTIAL, FAILED)


@dataclass(frozen=True)
class RunReport:
    """A finished run: its outcome, counts (the ledger's counters) and the first error a person can act on."""

    link: str
    run_id: str
    outcome: str
    started: datetime
    finished: datetime
    counts: Mapping[str, int] = field(default_factory=dict)
    error: str = ""
    dead_batches: int = 0
    dry_run: bool = False


class RunObserver(Protocol):
    def run_started(self, link: str, run_id: str, started: datetime) -> None:
        """The run holds the link and has work queued beyond its scan (a run that finishes inside its scan
        reports only run_finished)."""

    def run_skipped(self, link: str, reason: str, when: datetime) -> None:
        """A tick found the link still held by another run (``reason`` says which) and started nothing."""

    def run_finished(self, report: RunReport) -> None:
        """The run completed, with or without dead-lettered batches, or failed."""

    def event_applied(self, link: str, event: str, when: datetime) -> None:
        """A real-time event was applied to the link (``event`` describes it, by member hash only)."""
