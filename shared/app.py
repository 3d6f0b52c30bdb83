"""The bodies of the Functions: each takes a parsed trigger and the process's Context, does one step, returns.

plan_sync        timer or HTTP: one sync-links message per link whose previous run has finished
scan_link        sync-links message: read both sides' deltas, put sync-batches messages
reconcile_batch  sync-batches message: merge and write one batch; the last one commits the watermarks
dead_letter_*    a message that failed maxDequeueCount times: record it, so nothing is lost

Longer than 500 lines because every handler the Functions call lives here beside the Context they share, so
a trigger's whole path from message to pipeline reads in one place.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from operator import methodcaller
from typing import Any

from shared import telemetry
from shared.adapters.dataverse import Dataverse, DataverseError
from shared.adapters.limiter import ConnectionSlots
from shared.adapters.mailchimp import Mailchimp
from shared.adapters.ports import DataversePort, MailchimpPort
from shared.adapters.storage import BATCHES_QUEUE, LINKS_QUEUE, Storage
from shared.errors import LinkError
from shared.features.campaigns import core as campaigns
from shared.features.erasure.steps import ErasureStep
from shared.features.fields.scanning import MappedFields
from shared.features.fields.steps import FieldStep
from shared.features.memberships.steps import MembershipStep
from shared.features.preferences.scanning import CatalogSource
from shared.features.preferences.steps import PreferenceStep
from shared.features.realtime.announced import Announced, AnnouncingStep
from shared.features.realtime.handler import EventsHandler
from shared.features.realtime.receive import Receiver, Reply
from shared.features.status.board import StatusBoard
from shared.features.status.words import person_error
from shared.model.snapshots import Group
from shared.model.wire import BatchMessage
from shared.rules.watermarks import full_pass_due
from shared.settings import Settings, load_settings
from shared.state.aliases import AliasIndex
from shared.state.audit import AuditLog
from shared.state.identity import IdentityMap
from shared.state.ledger import Ledger, RunSummary, new_run_id
from shared.state.messages import MessageSupport
from shared.sync.observers import FAILED, PARTIAL, SUCCEEDED, RunObserver, RunReport
from shared.sync.pipeline import Outcome, Step, Unit
from shared.sync.reconcile import Reconciler
from shared.sync.scan import scan

log = logging.getLogger("consent_bridge")
PLANNED_KEEP = 200  # planned changes kept per batch for --dry-run output


@dataclass
class Context:
    """What a handler needs, built once per process from the settings."""

    settings: Settings
    storage: Storage
    mailchimp: MailchimpPort
    dataverse: DataversePort
    ledger: Ledger = field(init=False)
    identity: IdentityMap = field(init=False)
    steps: list[Step] = field(init=False)  # what the features plug into the reconcile pipeline
    memberships: MembershipStep = field(init=False)  # per-audience consent; says when a link's rows are first made
    interests: CatalogSource = field(init=False)  # what the preferences feature answers a scan
    fields: MappedFields = field(init=False)  # what the fields feature answers a scan
    status: StatusBoard = field(init=False)  # the link rows in Dynamics and "Sync now"
    webhooks: Receiver = field(init=False)  # the webhook routes' core (the real-time path)
    events: EventsHandler = field(init=False)  # the sync-events handler
    announced: Announced = field(init=False)  # what events announced: the scan's "missed by webhooks"
    observers: list[RunObserver] = field(init=False)  # told when a run starts, is skipped, finishes

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.storage)
        self.memberships = MembershipStep(self.settings, self.storage, self.dataverse)
        self.identity = IdentityMap(self.storage)
        self.slots = ConnectionSlots(self.storage, self.settings.mailchimp_max_connections)
        self.mailchimp.use_shared_slot(self.slots.slot)
        self.mailchimp.set_throttle_observer(lambda wait: _throttled(telemetry.SERVICE_MAILCHIMP, wait))
        self.dataverse.set_throttle_observer(lambda wait: _throttled(telemetry.SERVICE_DATAVERSE, wait))
        messages = MessageSupport(self.storage)
        self.dataverse.remember_messages(messages.known, messages.learned)
        # the features: each plugs its steps in here, in the order they run
        self.steps = [
            ErasureStep(self.settings, self.storage, self.mailchimp, self.dataverse),  # first: a skip is seen by all
            self.memberships,
            PreferenceStep(self.settings.dataverse_prefix),
            campaigns.CampaignStep(self.storage),
            AnnouncingStep(self.storage, enabled=bool(self.settings.public_base_url)),
            FieldStep(self.settings.field_map, self.storage, self.mailchimp),
        ]
        self.fields = MappedFields(self.settings.field_map, self.mailchimp, self.storage)
        self.interests = CatalogSource(self.mailchimp, self.dataverse, self.storage, self.settings.dataverse_prefix)
        self.status = StatusBoard(self.settings, self.dataverse, self.storage)
        self.observers = [self.status]
        self.watched = [self.memberships.scoped]  # tables whose edits in Dynamics are consent changes too
        self.webhooks = Receiver(self.settings, self.storage, watched=self.watched)
        self.events = EventsHandler(self, self.reconciler, partial(_event_applied, self), watched=self.watched)
        self.announced = Announced(self.storage)

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        return cls(
            settings, Storage(settings.storage), Mailchimp.from_settings(settings), Dataverse.from_settings(settings)
        )

    def reconciler(self) -> Reconciler:
        return Reconciler(
            settings=self.settings,
            storage=self.storage,
            mailchimp=self.mailchimp,
            dataverse=self.dataverse,
            steps=self.steps,
            identity=IdentityMap(self.storage),
        )


_context: Context | None = None
_working_on = threading.local()  # the link and run this thread is handling, for throttling telemetry


def _throttled(service: str, wait: float) -> None:
    telemetry.throttled(
        getattr(_working_on, "link", "unknown"), service, wait, run_id=getattr(_working_on, "run_id", None)
    )


def _handling(link: str, run_id: str) -> None:
    _working_on.link, _working_on.run_id = link, run_id


def context() -> Context:
    """The process-wide Context of the Functions host, from the app settings."""
    global _context
    if _context is None:
        _context = Context.from_settings(load_settings(os.environ))
    return _context


@dataclass
class PlannedRun:
    link: str
    run_id: str | None
    skipped: str = ""


def plan_sync(
    ctx: Context,
    *,
    link_name: str | None = None,
    full: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
    trigger: str = telemetry.TRIGGER_TIMER,
) -> list[PlannedRun]:
    now = now or datetime.now(UTC)
    links = [ctx.settings.link(link_name)] if link_name else list(ctx.settings.links)
    planned = []
    for link in links:
        run_id = new_run_id(now)
        holder = ctx.ledger.acquire(link.name, run_id, now)
        if holder:
            telemetry.run_skipped(link.name, "run-in-progress", run_id=holder)
            planned.append(PlannedRun(link.name, None, f"run {holder} is still in progress"))
            if not dry_run:
                reason = f"run {holder} is still in progress"
                _notify(ctx, methodcaller("run_skipped", link.name, reason, now))
            continue
        ctx.ledger.start_run(link.name, run_id, full=full, dry_run=dry_run, now=now)
        ctx.storage.send(LINKS_QUEUE, {"link": link.name, "run": run_id, "full": full})
        telemetry.run_started(run_id, link.name, trigger=trigger, full=full)
        planned.append(PlannedRun(link.name, run_id))
    return planned


def scan_link(ctx: Context, message: dict[str, Any], now: datetime | None = None) -> Counter[str]:
    now = now or datetime.now(UTC)
    link_name, run_id = message["link"], message["run"]
    _handling(link_name, run_id)
    run = ctx.ledger.run(link_name, run_id)
    if run is None or run["status"] not in ("planned", "scanning"):
        return Counter(duplicate=1)  # already scanned: a redelivered message does nothing
    ctx.ledger.update_run(link_name, run_id, status="scanning")
    link = ctx.settings.link(link_name)
    watermarks = ctx.ledger.watermarks(link_name)
    # the run that first creates the link's membership rows meets every base: a full pass
    upgrade = ctx.memberships.upgrade_due(link_name, run_id, dry_run=bool(run.get("dry_run")))
    full = upgrade or full_pass_due(
        watermarks, now, every=timedelta(hours=ctx.settings.full_resync_hours), asked=bool(message.get("full"))
    )
    retries = [] if run.get("dry_run") else ctx.ledger.pending_retries(link_name)
    # a full pass also meets the members whose audience membership a user edited since the last one
    edited = [] if run.get("dry_run") or not full else ctx.memberships.scoped.collect(link, watermarks)
    pointing = _Pointing(ctx, link_name, run_id)
    try:
        outcome = scan(
            link=link,
            settings=ctx.settings,
            dataverse=ctx.dataverse,
            mailchimp=ctx.mailchimp,
            watermarks=watermarks,
            full=full,
            run_id=run_id,
            mapped_records=lambda: iter(ctx.identity.iter_records(link_name)),
            retries=[row["groups"] for row in retries],
            meet=edited,
            send=pointing.queue,
            indexes=None
            if run.get("dry_run")
            else (AliasIndex(ctx.storage, link_name, "records"), AliasIndex(ctx.storage, link_name, "contacts")),
            interests=ctx.interests,
            dry_run=bool(run.get("dry_run")),
            fields=ctx.fields,
            changes=ctx.announced.watch(link_name, watermarks) if ctx.settings.public_base_url else None,
        )
    except (LinkError, DataverseError) as exc:  # a refusal fails the run at once: a retry cannot change it
        if isinstance(exc, DataverseError) and not exc.refused:
            if not run.get("first_error"):  # kept for the status row, should every attempt fail
                ctx.ledger.update_run(link_name, run_id, first_error=person_error(exc, run_id))
            raise
        ctx.ledger.fail_run(link_name, run_id, str(exc), now)
        log.error("run %s of link %s failed: %s", run_id, link_name, exc)
        telemetry.run_finished(
            run_id, link_name, outcome=telemetry.OUTCOME_FAILED, duration_seconds=_seconds_since(run)
        )
        _failed(ctx, link_name, run_id, person_error(exc, run_id))
        return Counter(failed=1, refused=int(isinstance(exc, DataverseError)))
    except Exception as exc:
        if not run.get("first_error"):  # kept for the status row, should every attempt fail
            ctx.ledger.update_run(link_name, run_id, first_error=person_error(exc, run_id))
        raise
    finally:
        pointing.flush()  # a batch kept in the ledger is always pointed at, whatever became of the scan
    if outcome.skips and not run.get("dry_run"):
        AuditLog(ctx.storage).write_skips(link_name, run_id, outcome.skips, now)
    outcome.counts.update(Counter(f"skip:{reason}" for _, reason in outcome.skips))
    _observe(ctx, link_name, run_id, outcome.counts, scan=True)
    if not run.get("dry_run"):  # campaign activity: one sync-batches message per campaign with something to read
        outcome.batch_ids += campaigns.plan_campaigns(
            ctx, link_name, run_id, quiet=not outcome.counts["mailchimp_read"]
        )
    ctx.ledger.scanned(link_name, run_id, outcome.batch_ids, outcome.proposed, outcome.counts)
    ctx.ledger.clear_retries(link_name, [row["RowKey"] for row in retries])
    log.info("run %s of link %s scanned: %d batches (full pass: %s)", run_id, link_name, len(outcome.batch_ids), full)
    finished = _finalize(ctx, link_name, run_id)  # every batch may have finished while the scan was still going
    if finished is None and not run.get("dry_run") and _long(run, outcome.batch_ids):
        _notify(ctx, lambda o: o.run_started(link_name, run_id, run["started"]))  # the row says Running
    return outcome.counts


def reconcile_batch(ctx: Context, message: dict[str, Any], dequeue_count: int = 1) -> Outcome:
    """Reconciles the batch the message points at, with more waiting batches of its run when it may."""
    if message.get("kind") == campaigns.KIND:
        _handling(message["link"], message["run"])
        return campaigns.reconcile_campaign(ctx, message, _finalize)
    link, run_id, batch_id = message["link"], message["run"], message["batch"]
    _handling(link, run_id)
    unit = ctx.ledger.claim_unit(
        link, run_id, batch_id, datetime.now(UTC), alone=dequeue_count > 1, max_emails=ctx.settings.reconcile_max_emails
    )
    _point_at(ctx, link, run_id, unit.released if unit else [])
    if unit is None or not unit.batches:
        return Outcome(batch_id, duplicate=True)  # finished, or in a unit another invocation works on
    run = ctx.ledger.run(link, run_id) or {}
    dry_run = bool(run.get("dry_run"))
    if not dry_run and ctx.ledger.batch_state(link, run_id, batch_id):
        return Outcome(batch_id, duplicate=True)  # reconciled before: a redelivered message writes nothing
    try:
        outcome = ctx.reconciler().reconcile(Unit.of(unit.message(), ctx.settings.link(link), dry_run=dry_run))
    except Exception as exc:
        _point_at(ctx, link, run_id, ctx.ledger.release_unit(link, run_id, batch_id))
        if not run.get("first_error"):  # kept for the status row, should the batch be dead-lettered
            ctx.ledger.update_run(link, run_id, first_error=person_error(exc, run_id))
        raise
    if not dry_run:
        ctx.ledger.finish_batch(link, run_id, batch_id, "done", outcome.counts)
        _observe(ctx, link, run_id, outcome.counts, scan=False)
    if dry_run:
        planned = [
            p.__dict__ | {"member_last_changed": None, "records_modifiedon": None}
            for p in outcome.planned
            if p.side != "none"
        ][:PLANNED_KEEP]
        ctx.ledger.finish_batch(link, run_id, batch_id, "done", outcome.counts)
        ctx.ledger.update_planned(link, run_id, batch_id, json.dumps(planned, default=str))
    for other in unit.others:
        ctx.ledger.finish_batch(link, run_id, other, "done", Counter(merged_into=1))
    if unit.others:
        log.info(
            "batch %s of run %s for link %s was reconciled together with %d more",
            batch_id,
            run_id,
            link,
            len(unit.others),
        )
    _finalize(ctx, link, run_id)
    return outcome


def dead_letter_batch(ctx: Context, message: dict[str, Any]) -> None:
    """A batch failed maxDequeueCount times: keep its groups for the next run and let this run finish."""
    if message.get("kind") == campaigns.KIND:
        return campaigns.dead_letter_campaign(ctx, message, _finalize)
    link, run_id, batch_id = message["link"], message["run"], message["batch"]
    _point_at(ctx, link, run_id, ctx.ledger.release_unit(link, run_id, batch_id))
    if ctx.ledger.batch_state(link, run_id, batch_id) == "done":
        return
    batch = ctx.ledger.batch_payload(link, run_id, batch_id)
    groups = batch.groups if batch else []
    ctx.ledger.record_retry(link, run_id, batch_id, json.dumps([g.encode() for g in groups], separators=(",", ":")))
    members = len(groups)
    first_delivery = ctx.ledger.batch_state(link, run_id, batch_id) != "dead"  # the alert counts one event per batch
    ctx.ledger.finish_batch(link, run_id, batch_id, "dead", Counter(dead_batches=1, dead_members=members))
    log.error(
        "batch %s of run %s for link %s was dead-lettered; its %d members are retried by the next run",
        batch_id,
        run_id,
        link,
        members,
    )
    if first_delivery:
        telemetry.dead_lettered(link, batch_id, run_id=run_id, members=members)
    _finalize(ctx, link, run_id)


def dead_letter_link(ctx: Context, message: dict[str, Any]) -> None:
    """A scan failed maxDequeueCount times: the run fails, the watermarks stay, the link is free again."""
    run = ctx.ledger.run(message["link"], message["run"]) or {}
    first = run.get("first_error") or "see the function's errors"
    error = f"the scan failed every attempt: {first}"
    ctx.ledger.fail_run(message["link"], message["run"], error, datetime.now(UTC))
    if run and not run.get("dry_run"):
        _failed(ctx, message["link"], message["run"], error)
    log.error("run %s of link %s failed: its scan was dead-lettered", message["run"], message["link"])
    if run.get("status") != "failed":  # a poison message delivered again is not a second dead letter
        telemetry.scan_dead_lettered(message["link"], message["run"])
    telemetry.run_finished(
        message["run"],
        message["link"],
        outcome=telemetry.OUTCOME_FAILED,
        duration_seconds=_seconds_since(ctx.ledger.run(message["link"], message["run"])),
    )


GATHER_SECONDS = 2  # how long a group's later batch messages wait for its first to be taken


class _Pointing:
    """The scan's batches: each payload waits in the run's ledger as soon as it is made; their messages go out
    together once the held batches reach RECONCILE_MAX_EMAILS addresses (and at the end of the scan).

    The group's first message is visible at once and the others ``GATHER_SECONDS`` later, so the invocation
    that takes the first claims the group's other batches with it and one unit writes whole pages; the later
    messages then find their batches taken and do nothing (or, should that unit fail or not take them all,
    bring them in). Visible together, the messages would be taken by as many invocations at once (the host
    hands a queue's messages to several, and ``sync --workers`` does too), each claiming its own batch alone
    and writing part pages: a run of three batches would cost three batch subscribes and three ``$batch``
    calls where one unit needs two and three. A unit's pages still go out side by side."""

    def __init__(self, ctx: Context, link: str, run_id: str) -> None:
        self.ctx, self.link, self.run_id = ctx, link, run_id
        self.held: list[str] = []
        self.emails = 0

    def queue(self, batch: BatchMessage) -> None:
        self.ctx.ledger.queue_batch(batch)  # the payload waits in the ledger; a message only says where
        self.held.append(batch.batch_id)
        self.emails += len(batch.groups)
        if self.emails >= self.ctx.settings.reconcile_max_emails:
            self.flush()

    def flush(self) -> None:
        held, self.held, self.emails = self.held, [], 0
        _point_at(self.ctx, self.link, self.run_id, held[:1])
        _point_at(self.ctx, self.link, self.run_id, held[1:], visible_in=GATHER_SECONDS)


def _point_at(ctx: Context, link: str, run_id: str, batch_ids: list[str], *, visible_in: int | None = None) -> None:
    for batch_id in batch_ids:
        ctx.storage.send(BATCHES_QUEUE, {"link": link, "run": run_id, "batch": batch_id}, visibility_timeout=visible_in)


def _finalize(ctx: Context, link: str, run_id: str) -> RunSummary | None:
    summary = ctx.ledger.try_finalize(link, run_id, datetime.now(UTC))
    if summary is not None:
        counts = summary.counts
        log.info("run %s of link %s %s: %d batches", run_id, link, summary.status, summary.batches)
        telemetry.run_finished(
            run_id,
            link,
            outcome=telemetry.OUTCOME_PARTIAL if summary.dead_batches else telemetry.OUTCOME_SUCCEEDED,
            records_read=counts["mailchimp_read"] + counts["dataverse_read"],
            changes_applied=counts["mailchimp_writes"] + counts["dynamics_writes"],
            skipped=sum(v for k, v in counts.items() if k.startswith("skip:")),
            conflicts=sum(v for k, v in counts.items() if k in CONFLICT_RULES),
            dead_lettered=summary.dead_batches,
            duration_seconds=((summary.finished or summary.started) - summary.started).total_seconds(),
        )
        if not summary.dry_run:
            first = (ctx.ledger.run(link, run_id) or {}).get("first_error", "") if summary.dead_batches else ""
            report = RunReport(
                link,
                run_id,
                PARTIAL if summary.dead_batches else SUCCEEDED,
                summary.started,
                summary.finished or summary.started,
                counts,
                error=first,
                dead_batches=summary.dead_batches,
            )
            _notify(ctx, lambda o: o.run_finished(report))
    return summary


def _long(run: dict[str, Any], batch_ids: list[str]) -> bool:
    """Whether the row should say Running before the outcome: a run of one batch after a short scan (the run in
    which nothing changed re-reads its overlap in one) writes its row once, when it finishes."""
    return len(batch_ids) > 1 or (datetime.now(UTC) - run["started"]) >= timedelta(minutes=1)


def _failed(ctx: Context, link: str, run_id: str, error: str) -> None:
    run = ctx.ledger.run(link, run_id) or {}
    finished = datetime.now(UTC)
    report = RunReport(link, run_id, FAILED, run.get("started") or finished, finished, {}, error=error)
    _notify(ctx, lambda o: o.run_finished(report))


def _notify(ctx: Context, tell: Callable[[RunObserver], None]) -> None:
    """Tells every observer (the status rows)."""
    for observer in ctx.observers:
        _quietly(partial(tell, observer))


def _quietly(show: Callable[[], None]) -> None:
    # showing a run must never fail it: its own state is written already, so a failure is only logged
    try:
        show()
    except Exception as exc:
        log.warning("a run event was not shown: %s: %s", type(exc).__name__, exc)


def sync_now(ctx: Context, now: datetime | None = None) -> list[PlannedRun]:
    """The one-minute check: a link whose row a user set to "Sync now" gets a run (the lease stops a second one
    while a run is going), and the row says No again."""
    now = now or datetime.now(UTC)
    planned: list[PlannedRun] = []
    for name in ctx.status.pressed():
        for item in plan_sync(ctx, link_name=name, now=now, trigger=telemetry.TRIGGER_TIMER):
            if item.run_id:
                _quietly(partial(ctx.status.answered, item.link, item.run_id, now))
            planned.append(item)
    return planned


def link_statuses(ctx: Context) -> list[dict[str, Any]]:
    """What every link's row in Dynamics says, for GET /api/status and `status`."""
    return [status.to_json() for status in ctx.status.statuses()]


CONFLICT_RULES = {
    "rule:both-changed-agree",
    "rule:both-changed-opt-out-wins",
    "rule:both-changed-mailchimp-newer",
    "rule:stale-base-opt-out-wins",
    "rule:first-meeting-opt-out-wins",
    "rule:email-conflict",
}


def _observe(ctx: Context, link: str, run_id: str, counts: Counter[str], *, scan: bool) -> None:
    """Per-step telemetry: what was read, what changed by rule and side, what was skipped and why."""
    if scan:
        telemetry.records_read(link, telemetry.SIDE_MAILCHIMP, counts["mailchimp_read"], run_id=run_id)
        telemetry.records_read(link, telemetry.SIDE_DATAVERSE, counts["dataverse_read"], run_id=run_id)
    for key, n in counts.items():
        if key.startswith("applied:"):
            _, side, rule = key.split(":", 2)
            telemetry.changes_applied(link, side, rule, n, run_id=run_id)
        elif key.startswith("skip:"):
            telemetry.skipped(link, key.split(":", 1)[1], n, run_id=run_id)
    for key, n in counts.items():
        if key.startswith("missed_by_webhooks:"):
            telemetry.missed_by_webhooks(link, key.split(":", 1)[1], n, run_id=run_id)
    conflicts = sum(v for k, v in counts.items() if k in CONFLICT_RULES)
    if conflicts:
        telemetry.conflicts(link, conflicts, run_id=run_id)


def _seconds_since(run: dict[str, Any] | None) -> float:
    started = (run or {}).get("started")
    return max(0.0, (datetime.now(UTC) - started).total_seconds()) if started else 0.0


# ---- the real-time path ------------------------------------------------------------------------------


def receive_mailchimp(ctx: Context, method: str, params: dict[str, str], headers: dict[str, str], body: bytes) -> Reply:
    """GET|POST /api/webhooks/mailchimp: check, enqueue, answer (never a call to Mailchimp or Dataverse)."""
    return ctx.webhooks.mailchimp(method, params, headers, body)


def receive_dataverse(ctx: Context, headers: dict[str, str], body: bytes) -> Reply:
    """POST /api/webhooks/dataverse: check, enqueue, answer."""
    return ctx.webhooks.dataverse(headers, body)


def handle_events(ctx: Context, message: dict[str, Any], dequeue_count: int = 1) -> Counter[str]:
    """sync-events message: this event and those waiting with it, one unit per link."""
    return ctx.events.handle(message, dequeue_count)


def dead_letter_event(ctx: Context, message: dict[str, Any]) -> None:
    """An event failed maxDequeueCount times: its member is retried by the next run of each link it concerns
    (which reads the change anyway: the sweep stays the truth)."""
    member = str(message.get("h") or "")
    links = [link.name for link in ctx.settings.links if link.audience_id == message.get("a")] if member else []
    for link in links:
        ctx.ledger.record_retry(link, "events", member, json.dumps([Group(member, "").encode()]))
    log.error(
        "a real-time event was dead-lettered; %s",
        f"member {member} is retried by the next run" if links else "the next run reads the change",
    )
    telemetry.event_dead_lettered(links[0] if len(links) == 1 else None)


def _event_applied(ctx: Context, link: str, event: str, when: datetime) -> None:
    _notify(ctx, lambda o: o.event_applied(link, event, when))
