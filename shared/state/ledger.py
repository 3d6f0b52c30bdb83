"""Run bookkeeping in Table Storage: one run per link at a time, batch completion, watermarks, retries.

SyncState (PartitionKey = link name):
    "lease"          the run holding the link, and until when
    "watermarks"     where the last completed run got to on each side, and when the last full pass was
    "retry|<run>|<batch>"  a dead-lettered batch's groups, replayed by the next run
    "catalog"        the audience's interest catalog (shared.preferences)
    "campaigns", "campaign|<id>"  the campaign watermark and each campaign's read progress (shared.campaigns)
SyncState (PartitionKey = "<link>|causes", RowKey = member hash): the campaign behind an unsubscribe or bounce
SyncRuns:
    PartitionKey = link, RowKey = run id (newest first): one row per run with its totals
    PartitionKey = "<link>|<run id>", RowKey = batch id: one row per batch of the run. The scan writes it
        "waiting" with the batch's payload (the queue message only points at it); a reconcile invocation
        "claims" it, alone or together with other waiting batches of the run (a unit); it ends "done" or "dead".

Rows in a format of the ledger's own (watermarks, runs, batches, retries) carry a version (shared.state.versions);
the watermark decisions themselves are pure, in shared.rules.watermarks.

Longer than 500 lines because every reader and writer of these row formats lives here, an erasure's scrub
included: no other module reads or rewrites a batch payload.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from shared.adapters.ports import StoragePort
from shared.adapters.storage import SYNC_RUNS, SYNC_STATE
from shared.model.wire import BatchMessage
from shared.rules.addresses import member_hash
from shared.rules.watermarks import Watermarks, on_run_closed
from shared.state.versions import STATE_VERSION, VERSION, check_version

LEASE_MINUTES = 120  # a run that has not finished by then is presumed dead and the link is free again
CLAIM_SECONDS = 660  # longer than host.json's functionTimeout: a claim outlives the invocation that made it
FINAL_STATES = ("done", "dead")


def new_run_id(now: datetime) -> str:
    # inverted milliseconds so the newest run sorts first in the table, also among runs of one second; ids of
    # earlier releases (inverted seconds, 10 digits) still sort after every id written since
    return f"{10**13 - int(now.timestamp() * 1000):013d}-{secrets.token_hex(3)}"


def run_started_at(run_id: str) -> datetime:
    inverted = run_id.split("-")[0]
    if len(inverted) <= 10:  # an id of an earlier release: inverted seconds
        return datetime.fromtimestamp(10**10 - int(inverted), UTC)
    return datetime.fromtimestamp((10**13 - int(inverted)) / 1000, UTC)


@dataclass
class Unit:
    """The batches one reconcile invocation works on: the one its message named (the lead), maybe more."""

    link: str
    run_id: str
    lead: str
    batches: list[BatchMessage] = field(default_factory=list)
    released: list[str] = field(default_factory=list)  # batches an earlier attempt left claimed: queue them again

    def message(self) -> BatchMessage:
        """The unit as one batch named after its lead: the batches are of one run and share no member."""
        return replace(self.batches[0], batch_id=self.lead, groups=[g for b in self.batches for g in b.groups])

    @property
    def others(self) -> list[str]:
        return [b.batch_id for b in self.batches if b.batch_id != self.lead]


def _without_member(row: Mapping[str, Any], hashed: str) -> dict[str, Any]:
    """The columns of a batch row rewritten without one person's group or plan (empty: the row lacks them)."""
    changes: dict[str, Any] = {}
    payload = row.get("payload")
    raw = getattr(payload, "value", payload)  # the client wraps binary values it did not type itself
    if isinstance(raw, bytes) and raw:
        groups = json.loads(zlib.decompress(raw))
        kept = [group for group in groups if _packed_hash(group[0]) != hashed]
        if len(kept) != len(groups):
            changes["payload"] = zlib.compress(json.dumps(kept, separators=(",", ":")).encode(), 9)
            changes["emails"] = len(kept)  # the row's message holds columns and interests, no addresses
    if row.get("planned"):
        planned = json.loads(row["planned"])
        kept_plans = [entry for entry in planned if entry.get("member_hash") != hashed]
        if len(kept_plans) != len(planned):
            changes["planned"] = json.dumps(kept_plans)
    return changes


def _packed_hash(head: str) -> str:
    """The member hash of a packed group's head: its address, or ``#<hash>`` for a group without one."""
    return head[1:] if head.startswith("#") else member_hash(head)


def _payload(link: str, run_id: str, row: Mapping[str, Any]) -> BatchMessage:
    check_version(SYNC_RUNS, row)
    message = json.loads(row["message"]) | {"link": link, "run": run_id, "batch": row["RowKey"]}
    return BatchMessage.decode(message | {"groups": base64.b64encode(row["payload"]).decode()}, hasher=member_hash)


@dataclass
class RunSummary:
    link: str
    run_id: str
    status: str
    started: datetime
    finished: datetime | None
    full: bool
    dry_run: bool
    batches: int
    dead_batches: int
    counts: Counter[str] = field(default_factory=Counter)
    error: str = ""


class Ledger:
    def __init__(self, storage: StoragePort) -> None:
        self.storage = storage
        self.state: TableClient = storage.table(SYNC_STATE)
        self.runs: TableClient = storage.table(SYNC_RUNS)

    # ---- leases ---------------------------------------------------------------------------
    def acquire(self, link: str, run_id: str, now: datetime) -> str | None:
        """Takes the link for this run; returns None on success, else the id of the run holding it."""
        entity = {
            "PartitionKey": link,
            "RowKey": "lease",
            "run_id": run_id,
            "expires": now + timedelta(minutes=LEASE_MINUTES),
        }
        try:
            self.state.create_entity(entity)
            return None
        except ResourceExistsError:
            pass
        current = self.state.get_entity(link, "lease")
        if current.get("run_id") and current["expires"] > now:
            return str(current["run_id"])
        try:
            self.state.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=current.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
            return None
        except ResourceModifiedError:
            return str(self.state.get_entity(link, "lease").get("run_id"))

    def release(self, link: str, run_id: str) -> None:
        try:
            current = self.state.get_entity(link, "lease")
        except ResourceNotFoundError:
            return
        if current.get("run_id") == run_id:
            current["run_id"] = ""
            with contextlib.suppress(ResourceModifiedError):
                self.state.update_entity(
                    current,
                    mode=UpdateMode.REPLACE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )

    # ---- watermarks -----------------------------------------------------------------------
    def watermarks(self, link: str) -> Watermarks:
        entity = self._get(SYNC_STATE, link, "watermarks")
        if entity is not None:
            check_version(SYNC_STATE, entity)
        return Watermarks.from_entity(entity)

    def _get(self, table: str, partition: str, row: str) -> dict[str, Any] | None:
        client = self.state if table == SYNC_STATE else self.runs
        try:
            return dict(client.get_entity(partition, row))
        except ResourceNotFoundError:
            return None

    # ---- runs -----------------------------------------------------------------------------
    def start_run(self, link: str, run_id: str, *, full: bool, dry_run: bool, now: datetime) -> None:
        self.runs.upsert_entity(
            {
                "PartitionKey": link,
                "RowKey": run_id,
                VERSION: STATE_VERSION,
                "status": "planned",
                "started": now,
                "full": full,
                "dry_run": dry_run,
                "batches": "",
                "counts": "{}",
                "proposed": "",
                "error": "",
            },
            mode=UpdateMode.REPLACE,
        )

    def run(self, link: str, run_id: str) -> dict[str, Any] | None:
        return self._get(SYNC_RUNS, link, run_id)

    def update_run(self, link: str, run_id: str, **fields: Any) -> None:
        self.runs.upsert_entity({"PartitionKey": link, "RowKey": run_id, **fields}, mode=UpdateMode.MERGE)

    def scanned(self, link: str, run_id: str, batch_ids: list[str], proposed: Watermarks, counts: Counter[str]) -> None:
        self.update_run(
            link,
            run_id,
            status="reconciling",
            batches=json.dumps(batch_ids),
            proposed=json.dumps(proposed.to_entity()),
            scan_counts=json.dumps(counts),
        )

    def batch_state(self, link: str, run_id: str, batch_id: str) -> str | None:
        """ "done" or "dead" once the batch is finished; None while it waits or is being worked on."""
        row = self._get(SYNC_RUNS, f"{link}|{run_id}", batch_id)
        return str(row["state"]) if row and row.get("state") in FINAL_STATES else None

    # ---- batch payloads and units ---------------------------------------------------------
    def queue_batch(self, batch: BatchMessage) -> None:
        """Keeps a batch's payload for whichever invocation takes it; a scan delivered twice keeps the first."""
        encoded = batch.encode()
        payload = base64.b64decode(encoded.pop("groups"))  # compressed already; kept as binary (64 KB a property)
        entity = {
            "PartitionKey": f"{batch.link}|{batch.run_id}",
            "RowKey": batch.batch_id,
            VERSION: STATE_VERSION,
            "state": "waiting",
            "emails": len(batch.groups),
            "attempts": 0,
            "unit": "",
            "message": json.dumps(encoded),
            "payload": payload,
        }
        with contextlib.suppress(ResourceExistsError):
            self.runs.create_entity(entity)

    def claim_unit(
        self, link: str, run_id: str, batch_id: str, now: datetime, *, alone: bool, max_emails: int
    ) -> Unit | None:
        """Claims the batch a message points at and, unless it must go alone, more waiting batches of the run
        (never tried before) up to max_emails, so that one invocation's writes fill whole pages.

        None when there is nothing to do: the batch is finished, or another live unit holds it. A batch that
        was already tried goes alone, so a failing batch cannot take healthy ones down with it.
        """
        partition = f"{link}|{run_id}"
        unit = Unit(link, run_id, batch_id)
        unit.released = self._release_extras(partition, batch_id)  # left behind by an attempt that died
        try:
            lead = self.runs.get_entity(partition, batch_id)
        except ResourceNotFoundError:
            return None
        state, holder = lead.get("state"), lead.get("unit") or ""
        if state in FINAL_STATES:
            return unit if unit.released else None
        if state == "claimed" and holder != batch_id and lead.get("until") and lead["until"] > now:
            return unit if unit.released else None
        alone = alone or int(lead.get("attempts") or 0) > 0 or state != "waiting"
        if not self._claim(lead, batch_id, now):
            return unit if unit.released else None
        unit.batches.append(_payload(link, run_id, lead))
        if alone:
            return unit
        emails = int(lead.get("emails") or 0)
        waiting = self.runs.query_entities(
            "PartitionKey eq @p and state eq 'waiting' and attempts eq 0",
            parameters={"p": partition},
            select=["RowKey", "emails"],
        )
        for row in waiting:
            if emails >= max_emails:
                break
            if row["RowKey"] == batch_id or emails + int(row.get("emails") or 0) > max_emails:
                continue
            try:
                extra = self.runs.get_entity(partition, row["RowKey"])
            except ResourceNotFoundError:
                continue
            if extra.get("state") != "waiting" or not self._claim(extra, batch_id, now):
                continue  # taken by another invocation in the meantime
            unit.batches.append(_payload(link, run_id, extra))
            emails += int(extra.get("emails") or 0)
        return unit

    def _claim(self, row: TableEntity, unit: str, now: datetime) -> bool:
        claimed = {
            "PartitionKey": row["PartitionKey"],
            "RowKey": row["RowKey"],
            "state": "claimed",
            "unit": unit,
            "until": now + timedelta(seconds=CLAIM_SECONDS),
            "attempts": int(row.get("attempts") or 0) + 1,
        }
        try:
            self.runs.update_entity(
                claimed, mode=UpdateMode.MERGE, etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified
            )
            return True
        except (ResourceModifiedError, ResourceNotFoundError):
            return False

    def _release_extras(self, partition: str, unit: str) -> list[str]:
        """Batches a unit claimed but did not finish go back to waiting, each to be reconciled on its own."""
        released: list[str] = []
        for row in self.runs.query_entities(
            "PartitionKey eq @p and unit eq @u and state eq 'claimed'",
            parameters={"p": partition, "u": unit},
            select=["RowKey"],
        ):
            if row["RowKey"] == unit:
                continue
            with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
                self.runs.update_entity(
                    {"PartitionKey": partition, "RowKey": row["RowKey"], "state": "waiting", "unit": ""},
                    mode=UpdateMode.MERGE,
                    etag=row.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                released.append(row["RowKey"])
        return released

    def release_unit(self, link: str, run_id: str, lead: str) -> list[str]:
        """After a failed attempt: the unit's other batches wait again (each will go alone); returns their ids."""
        return self._release_extras(f"{link}|{run_id}", lead)

    def batch_payload(self, link: str, run_id: str, batch_id: str) -> BatchMessage | None:
        row = self._get(SYNC_RUNS, f"{link}|{run_id}", batch_id)
        return _payload(link, run_id, row) if row and row.get("payload") else None

    def finish_batch(self, link: str, run_id: str, batch_id: str, state: str, counts: Counter[str]) -> None:
        self.runs.upsert_entity(
            {
                "PartitionKey": f"{link}|{run_id}",
                "RowKey": batch_id,
                VERSION: STATE_VERSION,
                "state": state,
                "counts": json.dumps(counts),
            },
            mode=UpdateMode.REPLACE,
        )

    def update_planned(self, link: str, run_id: str, batch_id: str, planned: str) -> None:
        self.runs.upsert_entity(
            {"PartitionKey": f"{link}|{run_id}", "RowKey": batch_id, "planned": planned[:60000]}, mode=UpdateMode.MERGE
        )

    def planned(self, link: str, run_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for row in self.runs.query_entities(
            "PartitionKey eq @p", parameters={"p": f"{link}|{run_id}"}, select=["RowKey", VERSION, "planned"]
        ):
            if row.get("planned"):
                check_version(SYNC_RUNS, {"PartitionKey": f"{link}|{run_id}", **row})
                found += json.loads(row["planned"])
        return found

    def try_finalize(self, link: str, run_id: str, now: datetime) -> RunSummary | None:
        """Completes the run when every batch it listed is done or dead-lettered; idempotent."""
        try:
            run = self.runs.get_entity(link, run_id)
        except ResourceNotFoundError:
            return None
        check_version(SYNC_RUNS, run)
        if run["status"] != "reconciling":
            return None
        expected = set(json.loads(run["batches"] or "[]"))
        finished = {
            row["RowKey"]: row
            for row in self.runs.query_entities(
                "PartitionKey eq @p and (state eq 'done' or state eq 'dead')",
                parameters={"p": f"{link}|{run_id}"},
                select=["RowKey", VERSION, "state", "counts"],
            )
        }
        if not expected <= set(finished):
            return None
        counts: Counter[str] = Counter(json.loads(run.get("scan_counts") or "{}"))
        dead = 0
        for batch_id in expected:
            check_version(SYNC_RUNS, {"PartitionKey": f"{link}|{run_id}", **finished[batch_id]})
            counts.update(json.loads(finished[batch_id]["counts"]))
            dead += finished[batch_id]["state"] == "dead"
        run["status"] = "completed" if not dead else "completed-with-dead-letters"
        run["finished"] = now
        run["counts"] = json.dumps(counts)
        run["dead_batches"] = dead
        try:
            self.runs.update_entity(
                run, mode=UpdateMode.REPLACE, etag=run.metadata["etag"], match_condition=MatchConditions.IfNotModified
            )
        except ResourceModifiedError:
            return None  # another batch finalized it first
        dry_run = bool(run.get("dry_run"))
        advanced = on_run_closed(
            {} if dry_run else json.loads(run["proposed"]), dry_run=dry_run, current=lambda: self.watermarks(link)
        )
        if advanced is not None:
            self.state.upsert_entity(
                {"PartitionKey": link, "RowKey": "watermarks", **advanced, VERSION: STATE_VERSION},
                mode=UpdateMode.REPLACE,
            )
        self.release(link, run_id)
        return self.summary(run)

    def fail_run(self, link: str, run_id: str, error: str, now: datetime) -> None:
        self.update_run(link, run_id, status="failed", error=error[:1000], finished=now)
        self.release(link, run_id)

    def summary(self, run: Mapping[str, Any]) -> RunSummary:
        check_version(SYNC_RUNS, run)
        return RunSummary(
            link=run["PartitionKey"],
            run_id=run["RowKey"],
            status=run["status"],
            started=run["started"],
            finished=run.get("finished"),
            full=bool(run.get("full")),
            dry_run=bool(run.get("dry_run")),
            batches=len(json.loads(run.get("batches") or "[]")),
            dead_batches=int(run.get("dead_batches") or 0),
            counts=Counter(json.loads(run.get("counts") or "{}")),
            error=run.get("error") or "",
        )

    def latest_runs(self, link: str, limit: int = 5) -> list[RunSummary]:
        rows = self.runs.query_entities("PartitionKey eq @p", parameters={"p": link}, results_per_page=limit)
        found: list[RunSummary] = []
        for row in rows:
            found.append(self.summary(dict(row)))
            if len(found) >= limit:
                break
        return found

    # ---- retries of dead-lettered batches -------------------------------------------------
    def record_retry(self, link: str, run_id: str, batch_id: str, groups_payload: str) -> None:
        self.state.upsert_entity(
            {
                "PartitionKey": link,
                "RowKey": f"retry|{run_id}|{batch_id}",
                VERSION: STATE_VERSION,
                "groups": groups_payload,
            },
            mode=UpdateMode.REPLACE,
        )

    def pending_retries(self, link: str) -> list[dict[str, Any]]:
        rows = [
            dict(row)
            for row in self.state.query_entities(
                "PartitionKey eq @p and RowKey ge 'retry|' and RowKey lt 'retry}'", parameters={"p": link}
            )
        ]
        for row in rows:
            check_version(SYNC_STATE, row)
        return rows

    def clear_retries(self, link: str, row_keys: list[str]) -> None:
        for row_key in row_keys:
            with contextlib.suppress(ResourceNotFoundError):
                self.state.delete_entity(link, row_key)

    # ---- erasure ----------------------------------------------------------------------------
    def scrub_member(self, link: str, hashed: str, *, dry_run: bool) -> tuple[list[str], list[tuple[str, str]]]:
        """Takes one person out of the link's rows that hold groups: batch payloads still waiting or claimed,
        dry-run plans, and groups kept for retry. Returns what held the person, and the (run, batch) whose payload
        was rewritten: an invocation that read such a row before cannot claim it any more (its ETag is stale),
        so the caller points at it once more."""
        found: list[str] = []
        rewritten: list[tuple[str, str]] = []
        rows = self.runs.query_entities(  # the entities themselves: their ETags guard the rewrite
            "PartitionKey ge @a and PartitionKey lt @b and (state eq 'waiting' or state eq 'claimed' or planned ne '')",
            parameters={"a": f"{link}|", "b": f"{link}|~"},
        )
        for row in rows:
            check_version(SYNC_RUNS, row)
            changes = _without_member(row, hashed)
            if not changes:
                continue
            run_id = str(row["PartitionKey"]).split("|", 1)[1]
            found.append(f"link {link}: batch {row['RowKey']} of run {run_id}")
            if dry_run:
                continue
            try:
                self.runs.update_entity(
                    {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"], **changes},
                    mode=UpdateMode.MERGE,
                    etag=row.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                # claimed or finished meanwhile: read again and scrub what is left (a finished batch holds none)
                again, more = self.scrub_member(link, hashed, dry_run=dry_run)
                return [*found[:-1], *again], [*rewritten, *more]
            if "payload" in changes:
                rewritten.append((run_id, str(row["RowKey"])))
        for retry in self.pending_retries(link):
            groups = json.loads(retry.get("groups") or "[]")
            kept = [group for group in groups if group[0] != hashed]  # Group.encode: the hash first
            if len(kept) == len(groups):
                continue
            found.append(f"link {link}: a dead-lettered batch kept for retry")
            if not dry_run:
                self.state.upsert_entity(
                    {
                        "PartitionKey": link,
                        "RowKey": retry["RowKey"],
                        "groups": json.dumps(kept, separators=(",", ":")),
                    },
                    mode=UpdateMode.MERGE,
                )
        return found, rewritten
