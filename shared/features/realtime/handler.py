"""The ``sync-events`` handler: many events become one unit per link, read again, reconciled like a run batch.

Coalescing. The message that triggered the handler is rarely alone: the handler drains the queue, and when more
keep arriving (a bulk admin action fires thousands of deliveries in a minute) it keeps gathering until the queue
has been quiet for a moment, so that a burst costs the calls of one unit, not one per event. A lone event waits
only for a second look at the queue; a trickle is cut after a few seconds so that latency stays low.

Reading again. An event is a hint: the member and the records are read anew before anything is decided. A burst
of Mailchimp events is one ``since_last_changed`` read (newest first, stopping once every named member is
found), a few are read by hash; records are read by id, a hundred ids per request, in one ``$batch``, and only
while they are in the link's marketing list. Then ``Reconciler.reconcile(unit)`` decides with the same rules,
bases and audit as a run; a duplicate, late or replayed event finds the base agreeing and writes nothing. What an
unsubscribe or cleaned event said caused it (its reason and campaign) rides on the member read again, when that
member still has the status the event announced.

At least once. Drained messages are deleted only after their unit is reconciled; when reconciling fails they
become visible again after host.json's visibility timeout, and one that failed maxDequeueCount times goes to
``sync-events-poison`` like the triggering message does.
"""

from __future__ import annotations

import json
import logging
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Any
from urllib.parse import quote

from azure.storage.queue import QueueMessage

from shared import telemetry
from shared.adapters.dataverse import BatchOperation
from shared.adapters.ports import Services
from shared.adapters.storage import EVENTS_QUEUE, poison
from shared.errors import StoredFormatError
from shared.features.realtime.announced import EVENTS_BATCH, Announced
from shared.features.realtime.deliveries import MEMBER_EVENTS, RECORD_TABLES
from shared.features.realtime.events import DATAVERSE, MAILCHIMP, Event, WatchedTable
from shared.features.realtime.registry import WebhookRegistry
from shared.model.snapshots import Group, MemberSnapshot, RecordSnapshot
from shared.model.times import now, parse_time
from shared.rules.addresses import member_hash, normalize_email
from shared.settings import Link
from shared.state.aliases import AliasIndex
from shared.state.identity import BaseRow, IdentityMap
from shared.state.ledger import new_run_id
from shared.sync.pipeline import Outcome, Unit
from shared.sync.reconcile import Reconciler
from shared.sync.scan import (
    MarketingList,
    archived_snapshot,
    dynamic_fetch,
    read_marketing_list,
    record_columns,
    to_record,
)

log = logging.getLogger("consent_bridge.realtime")

MEMBER_FIELDS = ["email_address", "status", "last_changed", "contact_id", "timestamp_opt", "unsubscribe_reason"]
PAGE_FIELDS = [f"members.{name}" for name in MEMBER_FIELDS] + ["total_items"]
FEW = 20  # up to this many members are read one by one; more are one since_last_changed read
IDS_PER_REQUEST = 100  # record ids per GET inside the $batch (the URL stays well under the service's limit)
MARGIN = timedelta(minutes=2)  # the since_last_changed read starts this long before the oldest fired_at


@dataclass(frozen=True)
class Gathering:
    """How long the handler keeps collecting events before it reconciles them."""

    max_dequeue_count: int = 5  # host.json's maxDequeueCount
    retry_seconds: int = 30  # host.json's visibilityTimeout: when a failed message is seen again
    lease_seconds: int = 600  # drained messages stay invisible while they are gathered and reconciled
    second_look: float = 0.2  # a lone event waits this long for company
    quiet: float = 1.5  # a stream has ended when nothing arrived for this long
    trickle: float = 1.0  # the most a few events wait for more
    burst_events: int = 200  # from this many on, a stream is a bulk action: gather until it ends
    burst_rate: float = 25.0  # events a second that also make a bulk action (once burst_rate_after have come)
    burst_rate_after: int = 50
    burst_seconds: float = 120.0
    max_events: int = 20_000


@dataclass
class Drained:
    message: QueueMessage
    body: dict[str, Any]


@dataclass
class LinkWork:
    """What one link's unit is built from."""

    mailchimp: list[Event] = field(default_factory=list)
    dataverse: list[Event] = field(default_factory=list)
    rows: list[Event] = field(default_factory=list)  # edits of a watched table's rows (not the records)
    met: set[str] = field(default_factory=set)  # member hashes those edits name


class EventsHandler:
    def __init__(
        self,
        services: Services,
        reconciler: Callable[[], Reconciler],
        applied: Callable[[str, str, datetime], None],
        gathering: Gathering | None = None,
        watched: Sequence[WatchedTable] = (),
    ) -> None:
        self.services = services
        self.watched = {table.table: table for table in watched}
        self.settings = services.settings
        self.reconciler = reconciler
        self.applied = applied  # tells the app's observers (the link's status row)
        self.gathering = gathering or Gathering()
        self.registry = WebhookRegistry(services.storage)
        self.announced = Announced(services.storage)

    # ---- the queue -------------------------------------------------------------------------------
    def handle(self, first: dict[str, Any], dequeue_count: int = 1, *, gather: bool = True) -> Counter[str]:
        """Handles the triggering message and what it gathers; raises when the unit could not be reconciled
        (the host retries the triggering message, the drained ones come back on their own)."""
        drained = self._gather() if gather else []
        counts: Counter[str] = Counter()
        events: list[Event] = []
        for body in [first, *(d.body for d in drained)]:
            try:
                events.append(Event.decode(body))
            except StoredFormatError as exc:
                log.error("a sync-events message was dropped: %s", exc)
                counts["unreadable"] += 1
        try:
            counts.update(self.apply(events))
        except Exception:
            self._give_back(drained)
            raise
        for item in drained:
            self.services.storage.delete(EVENTS_QUEUE, item.message)
        counts["events"] += len(events)
        return counts

    def _gather(self) -> list[Drained]:
        rules = self.gathering
        storage = self.services.storage
        drained: list[Drained] = []
        started = last_arrival = time.monotonic()
        looked_again = False
        while len(drained) < rules.max_events:
            found = storage.receive(EVENTS_QUEUE, visibility_timeout=rules.lease_seconds, max_messages=32)
            moment = time.monotonic()
            for message in found:
                if (message.dequeue_count or 1) > rules.max_dequeue_count:
                    self._poison(message)
                    continue
                drained.append(Drained(message, _json(message.content)))
            if found:
                last_arrival = moment
                continue
            if not looked_again:
                looked_again = True
                time.sleep(rules.second_look)
                continue
            streaming = moment - last_arrival < rules.quiet
            rate = len(drained) / max(moment - started, 1e-3)
            bulk = len(drained) >= rules.burst_events or (
                len(drained) >= rules.burst_rate_after and rate >= rules.burst_rate
            )
            cap = rules.burst_seconds if bulk else rules.trickle
            if not drained or not streaming or moment - started >= cap:
                break
            time.sleep(0.2)
        return drained

    def _poison(self, message: QueueMessage) -> None:
        storage = self.services.storage
        storage.send(poison(EVENTS_QUEUE), _json(message.content))
        storage.delete(EVENTS_QUEUE, message)
        log.error("a sync-events message failed %s times and moved to %s", message.dequeue_count, poison(EVENTS_QUEUE))

    def _give_back(self, drained: list[Drained]) -> None:
        queue = self.services.storage.queue(EVENTS_QUEUE)
        for item in drained:
            try:
                queue.update_message(item.message, visibility_timeout=self.gathering.retry_seconds)
            except Exception as exc:  # it comes back when its lease ends anyway
                log.warning("a drained event was not given back early: %s", type(exc).__name__)

    # ---- the events ------------------------------------------------------------------------------
    def apply(self, events: list[Event]) -> Counter[str]:
        counts: Counter[str] = Counter()
        work: dict[str, LinkWork] = defaultdict(LinkWork)
        dataverse = [e for e in events if e.side == DATAVERSE]
        if dataverse:
            own = self.own_user()
            echoes = [e for e in dataverse if own and e.user == own]
            counts["echo"] += len(echoes)
            rows = [e for e in dataverse if e not in echoes and e.entity in self.watched]
            dataverse = [e for e in dataverse if e not in echoes and e.entity in RECORD_TABLES]
            for table, watcher in self.watched.items():
                edits = [e for e in rows if e.entity == table]
                met = watcher.edited([e.record_id for e in edits], own) if edits else {}
                for link_name, hashes in met.items():
                    work[link_name].rows.extend(edits)
                    work[link_name].met.update(hashes)
                if edits and not met:
                    counts["ignored"] += len(edits)  # rows of no linked audience, or of no record the sync knows
        for event in events:
            if event.side != MAILCHIMP:
                continue
            links = [link for link in self.settings.links if link.audience_id == event.audience]
            if not links or event.type not in MEMBER_EVENTS:
                counts["ignored"] += 1
                continue
            for link in links:
                work[link.name].mailchimp.append(event)
        if dataverse:
            for link in self.settings.links:
                work[link.name].dataverse.extend(dataverse)
        if counts["echo"]:
            telemetry.webhook(telemetry.SIDE_DATAVERSE, telemetry.DELIVERY_ECHO, counts["echo"])
        for name, todo in work.items():
            counts.update(self._apply_link(self.settings.link(name), todo))
        return counts

    def own_user(self) -> str:
        """The product's own Dataverse user: remembered in SyncState, asked once (WhoAmI) when unknown."""
        user = self.registry.own_user()
        if not user:
            user = str(self.services.dataverse.whoami().get("UserId") or "").lower()
            if user:
                self.registry.remember_user(user)
        return user

    def _apply_link(self, link: Link, todo: LinkWork) -> Counter[str]:
        counts: Counter[str] = Counter()
        groups = self.groups(link, todo, counts)
        if groups:
            unit = Unit(link, new_run_id(now()), groups, batch_id=EVENTS_BATCH)
            outcome: Outcome = self.reconciler().reconcile(unit)
            counts.update(outcome.counts)
        applied = now()
        self.announced.announce(link.name, [g.member_hash for g in groups])
        for side, events in ((MAILCHIMP, todo.mailchimp), (DATAVERSE, [*todo.dataverse, *todo.rows])):
            if not events:
                continue
            latencies = [max(0.0, (applied - e.changed_at).total_seconds()) for e in events]
            telemetry.events_applied(
                link.name, side, len(events), latency_seconds=median(latencies), max_latency_seconds=max(latencies)
            )
            counts[f"events:{side}"] += len(events)
            self.registry.delivered(side, link.audience_id if side == MAILCHIMP else "", applied)
        written = counts["mailchimp_writes"] + counts["dynamics_writes"]
        if written:  # a duplicate, late or replayed event changed nothing: the link's row stays as it is
            described = (
                f"{len(todo.mailchimp)} Mailchimp and {len(todo.dataverse) + len(todo.rows)} Dynamics event(s), "
                f"{len(groups)} member(s) read again, {written} change(s) written"
            )
            self.applied(link.name, described, applied)
        return counts

    # ---- reading again ---------------------------------------------------------------------------
    def groups(self, link: Link, todo: LinkWork, counts: Counter[str]) -> list[Group]:
        """One group per member hash the events name (or whose records they name), read anew."""
        services = self.services
        mlist = read_marketing_list(services.dataverse, link.name, link.marketing_list_id)
        renamed = {e.member_hash: e.old_hash for e in todo.mailchimp if e.type == "upemail" and e.old_hash}
        named = {e.member_hash for e in todo.mailchimp} | todo.met
        bases = IdentityMap(services.storage).load(link.name, [*named, *renamed.values()])
        owner: dict[str, str] = {}  # record id -> the hash whose base holds it
        for hashed, base in bases.items():
            if hashed in renamed.values():
                continue  # the records follow the address change (rule 5); they are not read under the old hash
            owner.update({record_id: hashed for record_id, kind in base.records if kind == mlist.kind})
        event_ids = {e.record_id for e in todo.dataverse if e.entity == mlist.kind}
        counts["records_outside"] += sum(1 for e in todo.dataverse if e.entity != mlist.kind)
        records = self._records(mlist, sorted(event_ids | set(owner)), counts)
        counts["records_not_in_list"] += len(event_ids - {r.record_id for r in records})
        aliases = AliasIndex(services.storage, link.name, "records").get([r.record_id for r in records])
        found: dict[str, Group] = {}
        for record in records:
            email = normalize_email(record.email)
            if email is None:
                counts["skip:invalid-email"] += 1
                continue
            hashed = member_hash(email)
            group = found.setdefault(hashed, Group(hashed, email))
            group.records.append(record)
            before = aliases.get(record.record_id) or owner.get(record.record_id)
            if before and before != hashed:
                group.moved.append([record.record_id, before])  # the address changed in Dynamics (rule 5)
        for hashed in named:
            found.setdefault(hashed, Group(hashed, _base_email(bases.get(hashed))))
        for new, old in renamed.items():
            found[new].renamed_from = old
        self._members(link, found, named, todo.mailchimp, counts)
        return [found[h] for h in sorted(found) if found[h].email]

    def _records(self, mlist: MarketingList, ids: list[str], counts: Counter[str]) -> list[RecordSnapshot]:
        settings = self.settings
        columns = record_columns(mlist, settings.opt_out_columns, settings.subscriber_status_column)
        rows: list[dict[str, Any]] = []
        chunks = [ids[n : n + IDS_PER_REQUEST] for n in range(0, len(ids), IDS_PER_REQUEST)]
        if mlist.dynamic:
            for chunk in chunks:
                for page in self.services.dataverse.iter_fetchxml(mlist.entity_set, _fetch_ids(mlist, columns, chunk)):
                    rows.extend(page)
        elif chunks:
            operations = [BatchOperation("GET", _static_query(mlist, columns, chunk)) for chunk in chunks]
            for result, operation in zip(self.services.dataverse.batch(operations), operations, strict=True):
                failure = result.error(operation)
                if failure is not None:
                    raise failure
                rows.extend((result.body or {}).get("value", []))
        counts["dataverse_read"] += len(rows)
        return [to_record(row, mlist, settings.opt_out_columns, settings.subscriber_status_column) for row in rows]

    def _members(
        self, link: Link, groups: dict[str, Group], named: set[str], events: list[Event], counts: Counter[str]
    ) -> None:
        """The members of the named hashes, and of the records' hashes when there are few."""
        mailchimp = self.services.mailchimp
        answers: dict[str, dict[str, Any] | None] = {}
        if len(named) > FEW and events:
            oldest = min(e.changed_at for e in events) - MARGIN
            wanted = set(named)
            for page in mailchimp.iter_member_pages(
                link.audience_id, since_last_changed=oldest, fields=PAGE_FIELDS, newest_first=True
            ):
                counts["mailchimp_read"] += len(page)
                for listed in page:
                    hashed = member_hash(listed["email_address"])
                    if hashed in groups:
                        answers[hashed] = listed
                        wanted.discard(hashed)
                if not wanted:
                    break
        others = [h for h in groups if h not in answers and (h in named or len(groups) - len(named) <= FEW)]
        for hashed in others:
            answers[hashed] = mailchimp.member(link.audience_id, hashed, fields=MEMBER_FIELDS)
            counts["mailchimp_read"] += 1
        for hashed, member in answers.items():
            group = groups[hashed]
            group.member_seen = True
            if member is None:
                continue
            if member.get("status") == "archived":
                if group.records:  # a record meeting it must not bring it back, as on a full pass
                    group.member = archived_snapshot(member)
                continue  # otherwise absent, as an incremental scan (which lists no archived member) sees it
            group.member = MemberSnapshot(
                member["email_address"],
                member["status"],
                parse_time(member.get("last_changed")) or now(),
                member.get("contact_id"),
                parse_time(member.get("timestamp_opt")),
                unsubscribe_reason=member.get("unsubscribe_reason"),
            )
            cause = _cause(events, hashed, member["status"])
            if cause is not None:
                group.member.event_reason, group.member.campaign_id = cause.reason or None, cause.campaign_id or None
            group.email = normalize_email(member["email_address"]) or group.email


_CAUSED = {"unsubscribe": "unsubscribed", "cleaned": "cleaned"}  # event type -> the status it announces


def _cause(events: list[Event], hashed: str, status: str) -> Event | None:
    """The latest event that announced the member's present status (what Mailchimp said caused it), if any."""
    matching = [
        e for e in events if e.member_hash == hashed and _CAUSED.get(e.type) == status and (e.reason or e.campaign_id)
    ]
    return max(matching, key=lambda e: e.changed_at) if matching else None


def _json(content: Any) -> dict[str, Any]:
    data = json.loads(content)
    return data if isinstance(data, dict) else {}


def _base_email(base: BaseRow | None) -> str:
    return base.email if base is not None else ""


def _static_query(mlist: MarketingList, columns: list[str], ids: list[str]) -> str:
    listed = ",".join(f"'{i}'" for i in ids)
    condition = (
        f"{mlist.association}/any(l:l/listid eq {mlist.list_id}) and "
        f"Microsoft.Dynamics.CRM.In(PropertyName='{mlist.id_attribute}',PropertyValues=[{listed}])"
    )
    return f"{mlist.entity_set}?$select={','.join(columns)}&$filter={quote(condition, safe=chr(39) + ',/()=[]:')}"


def _fetch_ids(mlist: MarketingList, columns: list[str], ids: list[str]) -> str:
    """The dynamic list's own query with our columns, narrowed to these records."""
    fetch = ET.fromstring(dynamic_fetch(mlist.query or "", mlist, columns, None))  # noqa: S314 - built by us
    entity = fetch.find("entity")
    assert entity is not None  # dynamic_fetch checked it
    narrowed = ET.SubElement(entity, "filter", type="and")
    condition = ET.SubElement(narrowed, "condition", attribute=mlist.id_attribute, operator="in")
    for record_id in ids:
        ET.SubElement(condition, "value").text = record_id
    return ET.tostring(fetch, encoding="unicode")
