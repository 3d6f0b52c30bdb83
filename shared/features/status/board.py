"""The status board: each link's row in Dynamics (`cbr_synclink`), kept current by the run lifecycle, and the
"Sync now" check.

Cost. Every write is one `$batch` call holding a GET of the row and the PATCH that rewrites every product
column: the GET shows what a user changed since the product's last write (audited as overwritten), the PATCH
writes it back, in the same call. A run that finishes inside its scan (nothing queued: the idle run) writes its
row once, with its outcome; a run that queues batches writes Running when its scan has queued them, then its
outcome. "Sync now" is one GET per check for every link together.

What the product last wrote to each row, and the facts `GET /api/status` and `status` answer, are kept in
SyncState (PartitionKey = link, RowKey = "status"), so a status query costs no Dataverse call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.adapters.dataverse import BatchOperation, DataverseError
from shared.adapters.ports import DataversePort, StoragePort
from shared.adapters.storage import SYNC_STATE, upsert
from shared.features.status.schema import (
    FAILED,
    OUTCOME_LABELS,
    PARTIAL,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    Names,
    row_id,
)
from shared.features.status.words import clip, partial_error, summary
from shared.model.times import iso_seconds, now, parse_time
from shared.rules.audit import AuditEntry
from shared.rules.schedule import ScheduleError, next_run
from shared.settings import Settings
from shared.state.audit import AuditLog
from shared.state.versions import STATE_VERSION, VERSION, check_version
from shared.sync.observers import FAILED as RUN_FAILED
from shared.sync.observers import PARTIAL as RUN_PARTIAL
from shared.sync.observers import RunReport

log = logging.getLogger("consent_bridge.status")
STATUS_ROW = "status"
OVERWRITTEN = "status-row-overwritten"
CODES = {RUN_FAILED: FAILED, RUN_PARTIAL: PARTIAL}


@dataclass
class LinkStatus:
    """What one link's row says (and what `GET /api/status` answers)."""

    link: str
    state: str  # succeeded, partial, failed, running, skipped, or "never run"
    run_id: str = ""
    started: str | None = None
    finished: str | None = None
    summary: str = ""
    error: str = ""
    next_run: str | None = None
    last_event: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "link": self.link,
            "state": self.state,
            "runId": self.run_id or None,
            "started": self.started,
            "finished": self.finished,
            "summary": self.summary,
            "error": self.error or None,
            "nextRun": self.next_run,
            "lastEvent": self.last_event or None,
        }


class StatusBoard:
    """Implements RunObserver: writes the link rows; answers the sync-now check and status queries."""

    def __init__(self, settings: Settings, dataverse: DataversePort, storage: StoragePort) -> None:
        self.settings = settings
        self.dataverse = dataverse
        self.storage = storage
        self.names = Names(settings.dataverse_prefix)
        self._answering: set[str] = set()  # links whose "Sync now" this process is answering

    # ---- the run lifecycle (RunObserver) ---------------------------------------------------------
    def run_started(self, link: str, run_id: str, started: datetime) -> None:
        state = self._state(link)
        facts = json.loads(state.get("facts") or "{}")
        if state.get("running") == run_id or (facts.get("runid") == run_id and facts.get("lastoutcome") != RUNNING):
            return  # Running is on the row already ("Sync now" wrote it), or the run finished while scanning
        self._write(link, run_id, self._running(run_id, started), running=run_id)

    def run_skipped(self, link: str, reason: str, when: datetime) -> None:
        values = {
            "lastoutcome": SKIPPED,
            "lastsummary": f"the tick at {when:%Y-%m-%d %H:%M:%S} UTC started nothing",
            "lasterror": clip(f"skipped: {reason}"),
        }
        self._write(link, "", values, clear_sync_now=self._answered(link))

    def run_finished(self, report: RunReport) -> None:
        counts = report.counts
        dead_members = int(counts.get("dead_members", 0))
        error = report.error
        if report.outcome == RUN_PARTIAL:
            error = partial_error(report.dead_batches, dead_members, report.error)
        text = summary(counts, dead_batches=report.dead_batches, dead_members=dead_members, dry_run=report.dry_run)
        values = {
            "laststarted": report.started,
            "lastfinished": report.finished,
            "lastoutcome": CODES.get(report.outcome, SUCCEEDED),
            "lastsummary": clip(f"{text} (run {report.run_id})"),
            "lasterror": clip(error),
        }
        self._write(report.link, report.run_id, values, running="")

    def event_applied(self, link: str, event: str, when: datetime) -> None:
        self._write(link, "", {"lastevent": clip(f"{when:%Y-%m-%d %H:%M:%S} UTC: {event}")[:400]})

    # ---- "Sync now" --------------------------------------------------------------------------------
    def pressed(self) -> list[str]:
        """The links whose row a user set to "Sync now": one Dataverse read for every link together."""
        by_row = {row_id(link.name): link.name for link in self.settings.links}
        try:
            rows = self.dataverse.get(
                self.names.entity_set,
                {"$select": f"{self.names.table}id", "$filter": f"{self.names.sync_now} eq true"},
            ).get("value", [])
        except DataverseError as exc:
            if exc.status == 404:
                log.warning("the %s table is missing: run `python -m shared.cli provision`", self.names.table)
                return []
            raise
        found = [by_row[key] for row in rows if (key := str(row.get(f"{self.names.table}id", "")).lower()) in by_row]
        self._answering = set(found)
        return found

    def answered(self, link: str, run_id: str, started: datetime) -> None:
        """A run started for a "Sync now": the row says Running, and No again (in one write)."""
        self._write(link, run_id, self._running(run_id, started), clear_sync_now=self._answered(link), running=run_id)

    def _answered(self, link: str) -> bool:
        if link in self._answering:
            self._answering.discard(link)
            return True
        return False

    # ---- what the rows say -------------------------------------------------------------------------
    def statuses(self) -> list[LinkStatus]:
        """Every link's facts as its row shows them (from storage: no Dataverse call)."""
        found = []
        for link in self.settings.links:
            facts = json.loads(self._state(link.name).get("facts") or "{}")
            code = facts.get("lastoutcome")
            found.append(
                LinkStatus(
                    link=link.name,
                    state=OUTCOME_LABELS[code].lower() if code in OUTCOME_LABELS else "never run",
                    run_id=facts.get("runid") or "",
                    started=facts.get("laststarted"),
                    finished=facts.get("lastfinished"),
                    summary=facts.get("lastsummary") or "",
                    error=facts.get("lasterror") or "",
                    next_run=facts.get("nextrun"),
                    last_event=facts.get("lastevent") or "",
                )
            )
        return found

    # ---- writing a row -----------------------------------------------------------------------------
    def _running(self, run_id: str, started: datetime) -> dict[str, Any]:
        return {
            "laststarted": started,
            "lastoutcome": RUNNING,
            "lastsummary": f"run {run_id} running since {started:%Y-%m-%d %H:%M:%S} UTC",
        }

    def _next_run(self, after: datetime) -> datetime | None:
        try:
            return next_run(self.settings.sync_schedule, after)
        except ScheduleError as exc:
            log.warning("SYNC_SCHEDULE: %s; the rows show no next run", exc)
            return None

    def _state(self, link: str) -> dict[str, Any]:
        row = self.storage.get(SYNC_STATE, link, STATUS_ROW) or {}
        if row:
            check_version(SYNC_STATE, row)
        return row

    def _write(
        self,
        link: str,
        run_id: str,
        values: Mapping[str, Any],
        *,
        clear_sync_now: bool = False,
        running: str | None = None,
    ) -> None:
        """Rewrites every product column of the link's row (one $batch call: GET the row, PATCH it)."""
        when = now()
        configured = self.settings.link(link)
        state = self._state(link)
        facts: dict[str, Any] = json.loads(state.get("facts") or "{}")
        facts.update({name: _stored(value) for name, value in values.items()})
        facts.update(
            name=link,
            marketinglistid=configured.marketing_list_id,
            audienceid=configured.audience_id,
            nextrun=_stored(self._next_run(when)),
        )
        if run_id:
            facts["runid"] = run_id
        column = self.names.column
        body = {column(name): facts.get(name) for name in _PRODUCT}
        if facts.get("lastevent"):
            body[column("lastevent")] = facts["lastevent"]
        if clear_sync_now:
            body[self.names.sync_now] = False
        shown: dict[str, Any] = json.loads(state.get("shown") or "{}")
        key = f"{self.names.entity_set}({row_id(link)})"
        operations = []
        if shown:
            operations.append(BatchOperation("GET", f"{key}?$select={','.join(shown)}"))
        operations.append(BatchOperation("PATCH", key, body))  # no If-Match: the first write creates the row
        written = False
        try:
            results = self.dataverse.batch(operations, continue_on_error=True)
            failure = results[-1].error(operations[-1])
            if failure is not None:
                raise failure
            written = True
        except DataverseError as exc:
            log.warning("the status row of link %s was not written: %s", link, exc)
        if written and shown and results[0].ok:
            self._audit_edits(link, run_id, results[0].body or {}, shown, body, when)
        entity = {
            "PartitionKey": link,
            "RowKey": STATUS_ROW,
            VERSION: STATE_VERSION,
            "facts": json.dumps(facts),
            "shown": json.dumps({k: v for k, v in body.items() if k != self.names.sync_now})
            if written
            else state.get("shown", ""),
            "running": state.get("running", "") if running is None else running,
            # the status writes so far: what the benchmark charges to this feature, apart from record writes
            "writes": int(state.get("writes") or 0) + written,
        }
        self.storage.write(SYNC_STATE, [upsert(entity)])

    def _audit_edits(
        self,
        link: str,
        run_id: str,
        current: Mapping[str, Any],
        shown: Mapping[str, Any],
        written: Mapping[str, Any],
        when: datetime,
    ) -> None:
        """A product column whose value is not what the product last wrote was edited by someone else: the
        write just put it back; the audit says so."""
        entries = [
            AuditEntry(
                member_hash="",
                rule=OVERWRITTEN,
                record_ids=[row_id(link)],
                dynamics_old=_text(current.get(name)),
                dynamics_new=_text(written.get(name)),
                detail=(
                    f"{name} of link {link}'s sync link row was changed in Dynamics; Consent Bridge writes that "
                    "column and put its value back (only Sync now is for users)"
                ),
                feature="status",
            )
            for name, value in shown.items()
            if name in current and not _same(current.get(name), value)
        ]
        if entries:
            log.warning("link %s: %d column(s) of its sync link row were edited and written back", link, len(entries))
            AuditLog(self.storage).write(link, run_id or "status", entries, when=when)


_PRODUCT = (
    "name",
    "marketinglistid",
    "audienceid",
    "laststarted",
    "lastfinished",
    "lastoutcome",
    "lastsummary",
    "lasterror",
    "nextrun",
)


def _stored(value: Any) -> Any:
    return iso_seconds(value) if isinstance(value, datetime) else value


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _same(found: Any, wrote: Any) -> bool:
    if found in (None, "") and wrote in (None, ""):
        return True
    if isinstance(found, str) and isinstance(wrote, str):
        moments = parse_time(found) if "T" in found else None, parse_time(wrote) if "T" in wrote else None
        if moments[0] is not None and moments[1] is not None:
            return moments[0] == moments[1]
    return bool(found == wrote)
