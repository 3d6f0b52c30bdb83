"""Campaign activity from Mailchimp into Dynamics: campaigns, per-record engagement, and the campaign as the
cause of the unsubscribes and hard bounces it produced.

plan_campaigns       scan_link, after the status scan: one sync-batches message per campaign with work left
reconcile_campaign   a "campaign" message: one pass over one campaign's report
dead_letter_campaign a campaign message that failed maxDequeueCount times: the run finishes, the next run resumes
audit_detail         the reconciler's audit row: adds "campaign <name> (<id>)" to a status change it caused
provision_schema     provision(): the campaign and engagement tables, their lookups and views

A run lists the link's campaigns (one call); a campaign is read when its activity window is open and there may
be something new (a quiet run, in which no member changed status, skips a campaign whose opens and clicks in the
list are as at its last pass). A pass over a campaign reads, each only when there is something new:

- ``GET /reports/{id}``: the totals (every recipient counts, in Dynamics or not) and whether anything changed;
- ``/email-activity``, everything the first time and ``since`` the previous read (less an overlap) afterwards:
  opens, clicks and bounces per member, into the engagement rows of the member's records;
- ``/sent-to`` once, after the first activity read: rows for the recipients that read wrote none for (sent,
  and the delivery status), so each row is written once;
- ``/unsubscribed`` when the report's count grew: marks the rows and records the campaign as the cause (and
  tells every step, ``Step.causes_found``: the audience memberships put it on their rows).

Progress lives in SyncState (PartitionKey = link, RowKey ``campaign|<id>``); the link's campaign watermark in
RowKey ``campaigns``; causes in PartitionKey ``<link>|causes``, RowKey = member hash.

Counts are never added twice. Campaign totals are Mailchimp's own. An engagement row's counts are written
whole on the first read (a retried first read writes the same values again); a later read adds only events
newer than the row's last activity, read back from Dataverse, so an overlapping or repeated read adds nothing.
Engagement rows exist only for members whose address maps to records of the link (the identity map the status
sync keeps); everyone else counts in the campaign totals only. Row ids are derived from the campaign and the
record, so every write is an upsert of the same row.

Longer than 500 lines because a campaign's pass (listing, reading reports and activity, merging rows,
writing them, recording causes) is one streaming loop whose parts share the pass's state.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from azure.data.tables import TransactionOperation, UpdateMode

from shared import telemetry
from shared.adapters import schema
from shared.adapters.dataverse import BatchOperation
from shared.adapters.mailchimp import MailchimpError
from shared.adapters.ports import DataversePort, MailchimpPort, Services, StoragePort
from shared.adapters.storage import BATCHES_QUEUE, CONSENT_AUDIT, SYNC_STATE, upsert
from shared.errors import LinkError
from shared.model.kinds import BY_INDEX_CODE, KIND_SETS, KINDS
from shared.model.times import iso_seconds, parse_time
from shared.rules import addresses
from shared.rules.audit import AuditEntry
from shared.settings import Link
from shared.state.audit import AuditLog
from shared.state.identity import IdentityMap
from shared.state.ledger import Ledger, run_started_at
from shared.sync.pipeline import Outcome, Step, Unit

log = logging.getLogger("consent_bridge.campaigns")


class CampaignContext(Services, Protocol):
    """What a campaign pass needs of the app's context."""

    @property
    def identity(self) -> IdentityMap: ...

    @property
    def ledger(self) -> Ledger: ...

    @property
    def steps(self) -> list[Step]: ...  # told the causes a pass finds (Step.causes_found)


Finalize = Callable[[Any, str, str], object]  # the app's run finaliser: (context, link, run id)

KIND = "campaign"
BOUNCE_TYPES = {"hard": 100000000, "soft": 100000001}
WRITE_BATCH = 1000  # requests per Dataverse $batch
FEW_MEMBERS = 50  # an activity page this small looks its members up one identity shard at a time
READ_BY_ID = 1000  # engagement ids per FetchXML read: ~60 KB, sent inside $batch (64 KB GET limit)
CAUSE_TOLERANCE = timedelta(minutes=10)  # the member's last_changed and the report's timestamp of the same event
ACTIVITY_OVERLAP = timedelta(minutes=5)  # events Mailchimp records late are read again; rows count them once
CAUSE_ATTEMPTS = 3  # passes that look for the audit row of a status change whose cause came late
NAMESPACE = uuid.UUID("6f1d6c2e-5b0f-4c47-9a43-0c1b7e2f9d10")  # engagement and campaign row ids
REPORT_FIELDS = [
    "id",
    "campaign_title",
    "subject_line",
    "list_id",
    "list_name",
    "emails_sent",
    "unsubscribed",
    "send_time",
    "bounces",
    "opens",
    "clicks",
]


def campaign_table(prefix: str) -> str:
    return f"{prefix}_mailchimpcampaign"


def engagement_table(prefix: str) -> str:
    return f"{prefix}_emailengagement"


def campaign_row_id(campaign_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"campaign|{campaign_id}"))


def engagement_row_id(campaign_id: str, record_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"engagement|{campaign_id}|{record_id.lower()}"))


# ---- schema ---------------------------------------------------------------------------------------


def provision_schema(dataverse: DataversePort, prefix: str) -> list[str]:
    """The campaign and engagement tables, their columns, lookups and views; a line per thing created."""
    p = prefix
    campaign, engagement = campaign_table(p), engagement_table(p)
    done: list[str] = []
    tables = [
        (
            schema.table_metadata(
                f"{p}_MailchimpCampaign",
                "Mailchimp Campaign",
                "Mailchimp Campaigns",
                f"{p}_Name",
                "Name",
                "A Mailchimp campaign sent to a linked audience, with its report totals",
            ),
            [
                schema.string_column(f"{p}_Subject", "Subject", 400),
                schema.datetime_column(f"{p}_SendTime", "Send Time"),
                schema.string_column(f"{p}_AudienceId", "Audience Id", 50),
                schema.string_column(f"{p}_AudienceName", "Audience", 200),
                schema.string_column(f"{p}_MailchimpId", "Mailchimp Id", 50),
                schema.integer_column(f"{p}_Recipients", "Recipients"),
                schema.integer_column(f"{p}_Opens", "Opens"),
                schema.integer_column(f"{p}_UniqueOpens", "Unique Opens"),
                schema.integer_column(f"{p}_Clicks", "Clicks"),
                schema.integer_column(f"{p}_UniqueClicks", "Unique Clicks"),
                schema.integer_column(f"{p}_Bounces", "Bounces"),
                schema.integer_column(f"{p}_HardBounces", "Hard Bounces"),
                schema.integer_column(f"{p}_Unsubscribes", "Unsubscribes"),
                schema.datetime_column(f"{p}_TotalsRead", "Totals Read On"),
            ],
        ),
        (
            schema.table_metadata(
                f"{p}_EmailEngagement",
                "Email Engagement",
                "Email Engagements",
                f"{p}_Name",
                "Name",
                "What one contact, lead or account did with one Mailchimp campaign",
            ),
            [
                schema.boolean_column(f"{p}_Sent", "Sent"),
                schema.integer_column(f"{p}_Opens", "Opens"),
                schema.datetime_column(f"{p}_FirstOpen", "First Open"),
                schema.datetime_column(f"{p}_LastOpen", "Last Open"),
                schema.integer_column(f"{p}_Clicks", "Clicks"),
                schema.string_column(f"{p}_LastClickedUrl", "Last Clicked URL", 2000),
                schema.choice_column(
                    f"{p}_BounceType", "Bounce Type", {BOUNCE_TYPES["hard"]: "Hard", BOUNCE_TYPES["soft"]: "Soft"}
                ),
                schema.boolean_column(f"{p}_Unsubscribed", "Unsubscribed"),
                schema.datetime_column(f"{p}_LastActivity", "Last Activity"),
            ],
        ),
    ]
    done += schema.ensure_tables(dataverse, tables)
    lookups = [
        (campaign, f"{p}_Campaign", "Campaign", f"{p}_{campaign}_{engagement}"),
        ("contact", f"{p}_Contact", "Contact", f"{p}_contact_{engagement}"),
        ("lead", f"{p}_Lead", "Lead", f"{p}_lead_{engagement}"),
        ("account", f"{p}_Account", "Account", f"{p}_account_{engagement}"),
    ]
    for referenced, lookup, display, relationship in lookups:
        # engagement belongs to its campaign and its person: deleting either deletes it (erasure requests too)
        if schema.ensure_lookup(dataverse, engagement, referenced, lookup, display, relationship, delete="Cascade"):
            done.append(f"created lookup {lookup.lower()} on {engagement}")
    views = [
        (
            campaign,
            "Mailchimp campaigns by send time",
            _view(
                campaign,
                [
                    f"{p}_name",
                    f"{p}_sendtime",
                    f"{p}_audiencename",
                    f"{p}_recipients",
                    f"{p}_uniqueopens",
                    f"{p}_uniqueclicks",
                    f"{p}_bounces",
                    f"{p}_unsubscribes",
                ],
                f"{p}_sendtime",
            ),
        ),
        (
            engagement,
            "Email engagement by last activity",
            _view(
                engagement,
                [
                    f"{p}_name",
                    f"{p}_campaign",
                    f"{p}_contact",
                    f"{p}_lead",
                    f"{p}_account",
                    f"{p}_opens",
                    f"{p}_clicks",
                    f"{p}_bouncetype",
                    f"{p}_unsubscribed",
                    f"{p}_lastactivity",
                ],
                f"{p}_lastactivity",
            ),
        ),
    ]
    created_views = [
        table for table, name, (fetch, layout) in views if schema.ensure_view(dataverse, table, name, fetch, layout)
    ]
    if created_views:
        dataverse.publish(sorted(set(created_views)))
        done += [f"created view on {table}" for table in created_views]
    return done


def _view(table: str, columns: list[str], newest_first: str) -> tuple[str, str]:
    """FetchXML and grid layout of a view of the table's active rows, newest first."""
    active = '<condition attribute="statecode" operator="eq" value="0"/>'
    fetch = schema.view_fetch(table, [*columns, f"{table}id"], newest_first=newest_first, conditions=active)
    return fetch, schema.view_layout(table, columns)


# ---- progress in Table Storage ---------------------------------------------------------------------


@dataclass
class Progress:
    """What has been read of one campaign for one link."""

    campaign_id: str
    sent_to_read: bool = False
    activity_since: datetime | None = None  # the next email-activity read asks for events after this
    activity_signature: str = ""  # the report's open, click and bounce totals when activity was last read
    unsubscribes_seen: int = 0  # the report's unsubscribe count when /unsubscribed was last read
    totals_written: str = ""  # the campaign's totals as last written, to write its row only when they change
    summary_signature: str = ""  # the opens and clicks Mailchimp counted at the last pass
    passes: int = 0
    closed: bool = False  # the last pass after the activity window: never read again

    def entity(self, link: str) -> dict[str, Any]:
        return {
            "PartitionKey": link,
            "RowKey": f"campaign|{self.campaign_id}",
            "sent_to_read": self.sent_to_read,
            "activity_since": self.activity_since.isoformat() if self.activity_since else "",
            "activity_signature": self.activity_signature,
            "unsubscribes_seen": self.unsubscribes_seen,
            "totals_written": self.totals_written,
            "summary_signature": self.summary_signature,
            "passes": self.passes,
            "closed": self.closed,
        }

    @classmethod
    def from_entity(cls, campaign_id: str, entity: dict[str, Any] | None) -> Progress:
        if not entity:
            return cls(campaign_id)
        since = entity.get("activity_since")
        return cls(
            campaign_id,
            bool(entity.get("sent_to_read")),
            datetime.fromisoformat(since) if since else None,
            str(entity.get("activity_signature") or ""),
            int(entity.get("unsubscribes_seen") or 0),
            str(entity.get("totals_written") or ""),
            str(entity.get("summary_signature") or ""),
            int(entity.get("passes") or 0),
            bool(entity.get("closed")),
        )


def _save(storage: StoragePort, link: str, progress: Progress) -> None:
    storage.table(SYNC_STATE).upsert_entity(progress.entity(link), mode=UpdateMode.REPLACE)


def _progress_rows(storage: StoragePort, link: str) -> dict[str, Progress]:
    rows = storage.query(
        SYNC_STATE, "PartitionKey eq @p and RowKey ge 'campaign|' and RowKey lt 'campaign}'", {"p": link}
    )
    return {row["RowKey"].split("|", 1)[1]: Progress.from_entity(row["RowKey"].split("|", 1)[1], row) for row in rows}


# ---- planning: which campaigns a run reads ----------------------------------------------------------


def plan_campaigns(
    ctx: CampaignContext, link_name: str, run_id: str, *, quiet: bool = False, now: datetime | None = None
) -> list[str]:
    """Puts one sync-batches message per campaign of the link with work left; returns their batch ids.

    Listed: campaigns sent since the link's campaign watermark or inside the activity window. A campaign
    whose window has closed gets one last pass and is then never read again; the watermark moves to the
    window's start once every older campaign is closed. In a ``quiet`` run (the status scan found no member
    changed, so nobody unsubscribed or hard-bounced) a campaign whose opens and clicks are as at its last
    pass is not read: a run with nothing new costs one call per link however many campaigns are open."""

    link = ctx.settings.link(link_name)
    now = now or ctx.mailchimp.last_server_time or datetime.now(UTC)
    window_start = now - timedelta(days=ctx.settings.campaign_activity_days)
    mark = ctx.storage.get(SYNC_STATE, link_name, "campaigns") or {}
    watermark = datetime.fromisoformat(mark["since"]) if mark.get("since") else window_start
    progress = _progress_rows(ctx.storage, link_name)
    batch_ids: list[str] = []
    open_before_window: list[datetime] = []
    try:
        listed = list(ctx.mailchimp.iter_campaigns(link.audience_id, min(watermark, window_start)))
    except MailchimpError as exc:  # the status sync goes on; the next run lists the campaigns again
        log.warning(
            "run %s of link %s: the campaigns could not be listed, their activity is read next run: %s",
            run_id,
            link_name,
            exc,
        )
        return []
    for campaign in listed:
        campaign_id = str(campaign["id"])
        known = progress.get(campaign_id, Progress(campaign_id))
        if known.closed:
            continue
        sent = parse_time(campaign.get("send_time"))
        if sent is not None and sent <= window_start:
            open_before_window.append(sent)
        elif quiet and known.passes and summary_signature(campaign.get("report_summary")) == known.summary_signature:
            continue  # nothing new to read; soft bounces alone wait for the next pass (at the latest the last)
        batch_id = f"campaign-{campaign_id}"
        ctx.storage.send(
            BATCHES_QUEUE, {"kind": KIND, "link": link_name, "run": run_id, "batch": batch_id, "campaign": campaign_id}
        )
        batch_ids.append(batch_id)
    # since_send_time is exclusive: one second before the oldest campaign still to be closed
    since = min(open_before_window) - timedelta(seconds=1) if open_before_window else max(watermark, window_start)
    if since != watermark or not mark:
        ctx.storage.table(SYNC_STATE).upsert_entity(
            {"PartitionKey": link_name, "RowKey": "campaigns", "since": since.isoformat()}, mode=UpdateMode.REPLACE
        )
    if batch_ids:
        log.info("run %s of link %s: %d campaign(s) to read", run_id, link_name, len(batch_ids))
    return batch_ids


# ---- one pass over one campaign -------------------------------------------------------------------------


@dataclass
class _Pass:
    """What one pass needs: the clients, names and the link's record index."""

    ctx: CampaignContext
    link: Link
    run_id: str
    campaign_id: str
    title: str
    prefix: str
    counts: Counter[str] = field(default_factory=Counter)
    index: RecordIndex | None = None
    known_causes: set[str] | None = None  # member hashes with a recorded cause, read once per pass

    @property
    def engagement_set(self) -> str:
        return f"{engagement_table(self.prefix)}s"

    @property
    def campaign_set(self) -> str:
        return f"{campaign_table(self.prefix)}s"

    def records(self) -> RecordIndex:
        if self.index is None:
            started = time.perf_counter()
            self.index = RecordIndex.load(self.ctx.storage, self.link.name)
            log.info(
                "link %s: %d mapped addresses loaded in %.1fs",
                self.link.name,
                len(self.index),
                time.perf_counter() - started,
            )
        return self.index

    def row(self, record_id: str, kind: str, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The upsert body of one engagement row: its lookups, name and the columns given."""
        p = self.prefix
        body = {
            f"{p}_name": self.title[:200],
            f"{p}_Campaign@odata.bind": f"/{self.campaign_set}({campaign_row_id(self.campaign_id)})",
            f"{p}_{kind.capitalize()}@odata.bind": f"/{KIND_SETS[kind]}({record_id})",
            **values,
        }
        return engagement_row_id(self.campaign_id, record_id), body


def reconcile_campaign(ctx: CampaignContext, message: dict[str, Any], finalize: Finalize) -> Any:
    """One pass over one campaign for one link (a sync-batches message of kind "campaign")."""

    link_name, run_id, batch_id, campaign_id = message["link"], message["run"], message["batch"], message["campaign"]
    link = ctx.settings.link(link_name)
    progress = Progress.from_entity(campaign_id, ctx.storage.get(SYNC_STATE, link_name, f"campaign|{campaign_id}"))
    report = _campaign_report(ctx.mailchimp, campaign_id)
    read_at = ctx.mailchimp.last_server_time or datetime.now(UTC)
    work = _Pass(
        ctx, link, run_id, campaign_id, str(report.get("campaign_title") or campaign_id), ctx.settings.dataverse_prefix
    )
    work.counts["campaign_passes"] += 1
    if report.get("list_id") and report["list_id"] != link.audience_id:
        raise LinkError(
            f"link {link_name}",
            f"campaign {campaign_id} was sent to audience {report['list_id']}, not to the link's audience "
            f"{link.audience_id}",
            "check SYNC_LINKS audienceId",
        )
    totals = _campaign_row(work, report, read_at)
    totals_signature = json.dumps({k: v for k, v in totals.items() if not k.endswith("_totalsread")}, sort_keys=True)
    writer = _Writer(work)
    if totals_signature != progress.totals_written:
        writer.add([(campaign_row_id(campaign_id), totals)])  # first: engagement rows bind to it
    signature = activity_signature(report)
    written: set[bytes] = set()  # members a first activity read wrote: sent-to skips them (one write per row)
    if progress.activity_since is None or signature != progress.activity_signature:
        writer.add(_activity_rows(work, progress.activity_since, written))
        progress.activity_since = read_at - ACTIVITY_OVERLAP  # the report was read just before this read
        progress.activity_signature = signature
    if not progress.sent_to_read:
        writer.add(_sent_to_rows(work, written))
        progress.sent_to_read = True
    written.clear()
    unsubscribed = int(report.get("unsubscribed") or 0)
    if unsubscribed != progress.unsubscribes_seen:
        writer.add(_unsubscribe_rows(work))
        progress.unsubscribes_seen = unsubscribed
    writer.flush()
    # saved only now: a pass that fails part-way is read again whole, which writes the same rows again
    sent = parse_time(report.get("send_time"))
    progress.closed = sent is not None and read_at >= sent + timedelta(days=ctx.settings.campaign_activity_days)
    progress.passes += 1
    progress.totals_written = totals_signature
    progress.summary_signature = summary_signature(
        {
            "opens": (report.get("opens") or {}).get("opens_total"),
            "unique_opens": (report.get("opens") or {}).get("unique_opens"),
            "clicks": (report.get("clicks") or {}).get("clicks_total"),
            "subscriber_clicks": (report.get("clicks") or {}).get("unique_subscriber_clicks"),
        }
    )
    _tell_steps(work)
    _save(ctx.storage, link_name, progress)
    _complete_causes(ctx.storage, link_name, work.counts)
    ctx.ledger.finish_batch(link_name, run_id, batch_id, "done", work.counts)
    log.info(
        "run %s of link %s: campaign %s read (%s)%s",
        run_id,
        link_name,
        campaign_id,
        ", ".join(f"{k} {v}" for k, v in sorted(work.counts.items())),
        "; its window has closed" if progress.closed else "",
    )
    finalize(ctx, link_name, run_id)
    return Outcome(batch_id, counts=work.counts)


def dead_letter_campaign(ctx: CampaignContext, message: dict[str, Any], finalize: Finalize) -> None:
    """A campaign pass failed maxDequeueCount times: the run finishes; the next run reads from where it stood."""

    link, run_id, batch_id = message["link"], message["run"], message["batch"]
    if ctx.ledger.batch_state(link, run_id, batch_id) == "done":
        return
    ctx.ledger.finish_batch(link, run_id, batch_id, "dead", Counter(dead_batches=1))
    log.error(
        "campaign %s of run %s for link %s was dead-lettered; the next run reads it again from its last completed read",
        message["campaign"],
        run_id,
        link,
    )
    telemetry.dead_lettered(link, batch_id, run_id=run_id)
    finalize(ctx, link, run_id)


def _campaign_report(mailchimp: MailchimpPort, campaign_id: str) -> dict[str, Any]:
    """GET /reports/{id}: Mailchimp's own totals, through the adapter's retry loop and connection cap."""
    return mailchimp.campaign_report(campaign_id, fields=REPORT_FIELDS)


def summary_signature(summary: dict[str, Any] | None) -> str:
    """Opens and clicks as a campaign list's ``report_summary`` gives them (also built from a report)."""
    summary = summary or {}
    return "/".join(str(int(summary.get(k) or 0)) for k in ("opens", "unique_opens", "clicks", "subscriber_clicks"))


def activity_signature(report: dict[str, Any]) -> str:
    opens, clicks, bounces = report.get("opens") or {}, report.get("clicks") or {}, report.get("bounces") or {}
    return (
        f"{opens.get('opens_total', 0)}/{clicks.get('clicks_total', 0)}/{bounces.get('hard_bounces', 0)}/"
        f"{bounces.get('soft_bounces', 0)}"
    )


def _campaign_row(work: _Pass, report: dict[str, Any], read_at: datetime) -> dict[str, Any]:
    p = work.prefix
    opens, clicks, bounces = report.get("opens") or {}, report.get("clicks") or {}, report.get("bounces") or {}
    hard, soft = int(bounces.get("hard_bounces") or 0), int(bounces.get("soft_bounces") or 0)
    sent = parse_time(report.get("send_time"))
    return {
        f"{p}_name": work.title[:200],
        f"{p}_subject": str(report.get("subject_line") or "")[:400],
        f"{p}_sendtime": _iso_or_none(sent),
        f"{p}_audienceid": work.link.audience_id,
        f"{p}_audiencename": str(report.get("list_name") or "")[:200],
        f"{p}_mailchimpid": work.campaign_id,
        f"{p}_recipients": int(report.get("emails_sent") or 0),
        f"{p}_opens": int(opens.get("opens_total") or 0),
        f"{p}_uniqueopens": int(opens.get("unique_opens") or 0),
        f"{p}_clicks": int(clicks.get("clicks_total") or 0),
        f"{p}_uniqueclicks": int(clicks.get("unique_clicks") or 0),
        f"{p}_bounces": hard + soft,
        f"{p}_hardbounces": hard,
        f"{p}_unsubscribes": int(report.get("unsubscribed") or 0),
        f"{p}_totalsread": _iso_or_none(read_at),
    }


def _sent_to_rows(work: _Pass, written: set[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of the recipients the first activity read did not write already: sent, and how it was delivered."""
    p = work.prefix
    index = work.records()
    for recipient in work.ctx.mailchimp.iter_sent_to(work.campaign_id):
        work.counts["campaign_recipients_read"] += 1
        member_hash = _hash_of(recipient)
        if bytes.fromhex(member_hash) in written:
            continue
        status = recipient.get("status") or "sent"
        for record_id, kind in index.get(member_hash):
            yield work.row(
                record_id,
                kind,
                {f"{p}_sent": True, f"{p}_bouncetype": BOUNCE_TYPES.get(status), f"{p}_opens": 0, f"{p}_clicks": 0},
            )


def _activity_rows(work: _Pass, since: datetime | None, written: set[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Engagement rows from email-activity: whole counts on the first read, new events merged afterwards.
    ``written`` collects the members whose rows a first read wrote (their sent-to row is then not needed)."""
    index = work.records() if since is None else None
    page: list[tuple[str, list[dict[str, Any]]]] = []
    for item in work.ctx.mailchimp.iter_email_activity(work.campaign_id, since):
        work.counts["campaign_activity_members_read"] += 1
        events = item.get("activity") or []
        if events:
            page.append((_hash_of(item), events))
        if len(page) >= WRITE_BATCH:
            yield from _merge_page(work, page, index, since, written)
            page = []
    if page:
        yield from _merge_page(work, page, index, since, written)


def _merge_page(
    work: _Pass,
    page: list[tuple[str, list[dict[str, Any]]]],
    index: RecordIndex | None,
    since: datetime | None,
    written: set[bytes],
) -> Iterator[tuple[str, dict[str, Any]]]:
    p = work.prefix
    if index is None and len(page) > FEW_MEMBERS:
        index = work.records()  # one partition read beats a point read per shard
    mapped = (
        index.subset(h for h, _ in page)
        if index is not None
        else RecordIndex.lookup(work.ctx.identity, work.link.name, [h for h, _ in page])
    )
    targets = [
        (member_hash, events, record_id, kind)
        for member_hash, events in page
        for record_id, kind in mapped.get(member_hash)
    ]
    work.counts["campaign_activity_unmapped"] += sum(1 for h, _ in page if not mapped.get(h))
    current = {} if since is None else _current_rows(work, [engagement_row_id(work.campaign_id, t[2]) for t in targets])
    causes: dict[str, dict[str, Any]] = {}
    for member_hash, events, record_id, kind in targets:
        row = current.get(engagement_row_id(work.campaign_id, record_id), {})
        merged = _merge_events(p, row, events)
        if merged is None:
            continue  # every event was counted by an earlier read
        if since is None:
            merged[f"{p}_sent"] = True
            written.add(bytes.fromhex(member_hash))
        yield work.row(record_id, kind, merged)
        hard = [e for e in events if e.get("action") == "bounce" and e.get("type", "hard") == "hard"]
        if hard:
            causes[member_hash] = _cause(work, "a hard bounce", parse_time(hard[-1].get("timestamp")))
    _record_causes(work, causes)


def _merge_events(p: str, row: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The columns after adding the events newer than the row's last activity; None when there are none."""
    counted = parse_time(row.get(f"{p}_lastactivity"))
    new = sorted(
        (e for e in events if (at := parse_time(e.get("timestamp"))) is not None and (counted is None or at > counted)),
        key=lambda e: str(e.get("timestamp")),
    )
    if not new:
        return None
    opens = [e for e in new if e.get("action") == "open"]
    clicks = [e for e in new if e.get("action") == "click"]
    bounces = [e for e in new if e.get("action") == "bounce"]
    values: dict[str, Any] = {f"{p}_lastactivity": _iso_or_none(parse_time(new[-1]["timestamp"]))}
    if opens:
        values[f"{p}_opens"] = int(row.get(f"{p}_opens") or 0) + len(opens)
        values[f"{p}_firstopen"] = row.get(f"{p}_firstopen") or _iso_or_none(parse_time(opens[0]["timestamp"]))
        values[f"{p}_lastopen"] = _iso_or_none(parse_time(opens[-1]["timestamp"]))
    elif not row:
        values[f"{p}_opens"] = 0
    if clicks:
        values[f"{p}_clicks"] = int(row.get(f"{p}_clicks") or 0) + len(clicks)
        values[f"{p}_lastclickedurl"] = str(clicks[-1].get("url") or "")[:2000]
    elif not row:
        values[f"{p}_clicks"] = 0
    if bounces:
        values[f"{p}_bouncetype"] = BOUNCE_TYPES.get(str(bounces[-1].get("type") or "hard"))
    return values


def _current_rows(work: _Pass, row_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The engagement rows already in Dataverse among these ids (an incremental read adds to them)."""
    p, table = work.prefix, engagement_table(work.prefix)
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(row_ids), READ_BY_ID):
        values = "".join(f"<value>{row_id}</value>" for row_id in row_ids[start : start + READ_BY_ID])
        fetch = (
            f'<fetch><entity name="{table}"><attribute name="{table}id"/><attribute name="{p}_opens"/>'
            f'<attribute name="{p}_clicks"/><attribute name="{p}_firstopen"/>'
            f'<attribute name="{p}_lastactivity"/><filter><condition attribute="{table}id" operator="in">'
            f"{values}</condition></filter></entity></fetch>"
        )
        for page in work.ctx.dataverse.iter_fetchxml(work.engagement_set, fetch):
            work.counts["campaign_rows_read"] += len(page)
            found.update({str(row[f"{table}id"]).lower(): row for row in page})
    return found


def _unsubscribe_rows(work: _Pass) -> Iterator[tuple[str, dict[str, Any]]]:
    p = work.prefix
    index = work.records()
    causes: dict[str, dict[str, Any]] = {}
    for entry in work.ctx.mailchimp.iter_unsubscribed(work.campaign_id):
        work.counts["campaign_unsubscribes_read"] += 1
        member_hash = _hash_of(entry)
        records = index.get(member_hash)
        if records:
            causes[member_hash] = _cause(work, "an unsubscribe", parse_time(entry.get("timestamp")))
        for record_id, kind in records:
            yield work.row(record_id, kind, {f"{p}_unsubscribed": True})
    _record_causes(work, causes)


class _Writer:
    """Upserts rows in $batch requests of 1,000 as they stream in, so a campaign is never held whole."""

    def __init__(self, work: _Pass) -> None:
        self.work = work
        self.pending: list[tuple[str, dict[str, Any]]] = []

    def add(self, rows: Iterable[tuple[str, dict[str, Any]]]) -> None:
        for item in rows:
            self.pending.append(item)
            if len(self.pending) >= WRITE_BATCH:
                self._send(self.pending)
                self.pending = []

    def flush(self) -> None:
        if self.pending:
            self._send(self.pending)
            self.pending = []

    def _send(self, items: list[tuple[str, dict[str, Any]]]) -> None:

        work = self.work
        campaign_row = campaign_row_id(work.campaign_id)
        operations = [
            BatchOperation(
                "PATCH", f"{work.campaign_set if row_id == campaign_row else work.engagement_set}({row_id})", body
            )
            for row_id, body in items
        ]
        results = work.ctx.dataverse.batch(operations)
        log.debug("campaign %s: $batch of %d rows written", work.campaign_id, len(operations))
        for (row_id, body), result, operation in zip(items, results, operations, strict=True):
            if result.ok:
                work.counts["campaign_rows_written" if row_id == campaign_row else "campaign_engagements_written"] += 1
                continue
            error = result.error(operation)
            if row_id == campaign_row or result.status >= 500 or result.status in (424, 429):
                raise error  # type: ignore[misc]  # the message is retried; rows written so far are written again
            work.counts["campaign_write_refused"] += 1
            record = next((v for k, v in body.items() if k.endswith("@odata.bind") and "_Campaign@" not in k), "")
            log.warning("campaign %s: the engagement row of %s was refused: %s", work.campaign_id, record, error)


# ---- the link's records by member hash ----------------------------------------------------------------


class RecordIndex:
    """Member hash -> the link's records (id, kind), packed: 16 bytes per hash, 17 per record."""

    def __init__(self, packed: dict[bytes, bytes] | None = None) -> None:
        self.packed = packed or {}

    def __len__(self) -> int:
        return len(self.packed)

    @classmethod
    def load(cls, storage: StoragePort, link: str) -> RecordIndex:
        """Every mapped address of the link, read shard by shard from the identity map (one partition query)."""
        packed: dict[bytes, bytes] = {}
        for member_hash, records in IdentityMap(storage).link_records(link):
            packed[bytes.fromhex(member_hash)] = _pack(records)
        return cls(packed)

    @classmethod
    def lookup(cls, identity: IdentityMap, link: str, hashes: list[str]) -> RecordIndex:
        """The records of a few hashes, read from the identity map (for small incremental reads)."""
        bases = identity.load(link, hashes)
        return cls({bytes.fromhex(h): _pack(row.records) for h, row in bases.items() if row.records})

    def subset(self, hashes: Iterable[str]) -> RecordIndex:
        keys = (bytes.fromhex(h) for h in hashes)
        return RecordIndex({k: self.packed[k] for k in keys if k in self.packed})

    def get(self, member_hash: str) -> list[tuple[str, str]]:
        data = self.packed.get(bytes.fromhex(member_hash)) if member_hash else None
        if not data:
            return []
        return [
            (str(uuid.UUID(bytes=data[i + 1 : i + 17])), BY_INDEX_CODE[data[i]].name) for i in range(0, len(data), 17)
        ]


def _pack(records: Iterable[Any]) -> bytes:
    return b"".join(
        bytes([KINDS[kind].index_code]) + uuid.UUID(record_id).bytes for record_id, kind in records if kind in KINDS
    )


def _hash_of(item: dict[str, Any]) -> str:
    email_id = str(item.get("email_id") or "")
    return email_id if len(email_id) == 32 else addresses.member_hash(str(item.get("email_address") or ""))


# ---- causes of status changes -----------------------------------------------------------------------------


def _cause(work: _Pass, what: str, at: datetime | None) -> dict[str, Any]:
    return {
        "campaign_id": work.campaign_id,
        "text": f"{what} in campaign {work.title} ({work.campaign_id})",
        "at": _iso_or_none(at),
        "run_id": work.run_id,
        "pending": True,
        "attempts": 0,
        "told": False,  # the steps have not heard of it yet (_tell_steps)
    }


def _record_causes(work: _Pass, causes: dict[str, dict[str, Any]]) -> None:
    """Keeps, per member hash, the campaign that unsubscribed or hard-bounced the member (mapped members only)."""
    if not causes:
        return
    partition = f"{work.link.name}|causes"
    if work.known_causes is None:
        work.known_causes = {
            row["RowKey"]
            for row in work.ctx.storage.query(
                SYNC_STATE,
                "PartitionKey eq @p and campaign_id eq @c",
                {"p": partition, "c": work.campaign_id},
                select=["RowKey"],
            )
        }
    new = {h: c for h, c in causes.items() if h not in work.known_causes}  # a cause read again is kept as it was
    work.ctx.storage.write(SYNC_STATE, [upsert({"PartitionKey": partition, "RowKey": h, **c}) for h, c in new.items()])
    work.known_causes |= set(new)
    work.counts["campaign_causes_recorded"] += len(new)


def _tell_steps(work: _Pass) -> None:
    """Tells every step the causes this campaign's passes recorded and no step has heard yet (one call to them
    per pass, whatever the pages that found the causes; a pass that failed before telling is told by the next),
    e.g. the audience memberships, whose rows say why a status changed."""
    partition = f"{work.link.name}|causes"
    untold = {
        str(row["RowKey"]): str(row.get("text") or "")
        for row in work.ctx.storage.query(
            SYNC_STATE,
            "PartitionKey eq @p and campaign_id eq @c and told eq false",
            {"p": partition, "c": work.campaign_id},
            select=["RowKey", "text"],
        )
    }
    if not untold:
        return
    for step in work.ctx.steps:
        step.causes_found(work.link, untold)
    work.ctx.storage.write(
        SYNC_STATE,
        [
            (
                TransactionOperation.UPSERT,
                {"PartitionKey": partition, "RowKey": member, "told": True},
                {"mode": UpdateMode.MERGE},
            )
            for member in untold
        ],
    )
    work.counts["campaign_causes_told"] += len(untold)


_cause_cache: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}


def audit_detail(storage: StoragePort, link: str, run_id: str, planned: AuditEntry) -> str:
    """The detail of a ConsentAudit row, with the campaign that caused the member's status change when one did.

    Causes are read once per link and run; a cause recorded after that is written into the audit row by the
    campaign's own pass instead (``_complete_causes``)."""
    detail = str(planned.detail or "")
    if not planned.member_hash or planned.side == "none" or planned.feature:
        return detail
    key = (link, run_id)
    if key not in _cause_cache:
        if len(_cause_cache) > 64:
            _cause_cache.clear()
        _cause_cache[key] = {
            row["RowKey"]: dict(row)
            for row in storage.query(SYNC_STATE, "PartitionKey eq @p and pending eq true", {"p": f"{link}|causes"})
        }
    cause = _cause_cache[key].get(planned.member_hash)
    if cause is None or not _same_event(cause, planned.member_last_changed):
        return detail
    storage.table(SYNC_STATE).upsert_entity(
        {"PartitionKey": f"{link}|causes", "RowKey": planned.member_hash, "pending": False}, mode=UpdateMode.MERGE
    )
    return _with_cause(detail, cause["text"])


def _same_event(cause: dict[str, Any], member_last_changed: datetime | None) -> bool:
    at = parse_time(cause.get("at"))
    return at is not None and member_last_changed is not None and abs(member_last_changed - at) <= CAUSE_TOLERANCE


def _with_cause(detail: str, text: str) -> str:
    if text in detail:
        return detail
    return f"{detail}; {text}" if detail else text


def _complete_causes(storage: StoragePort, link: str, counts: Counter[str]) -> None:
    """Writes the cause into audit rows written before the cause was known (same run), then stops looking."""

    partition = f"{link}|causes"
    pending = [
        dict(row) for row in storage.query(SYNC_STATE, "PartitionKey eq @p and pending eq true", {"p": partition})
    ]
    done = []
    for cause in pending:
        member_hash, run_id = cause["RowKey"], str(cause.get("run_id") or "")
        found = False
        days = {run_started_at(run_id).date(), datetime.now(UTC).date()} if run_id else set()
        for day in sorted(days):
            for row in AuditLog(storage).member_rows(link, day, run_id, member_hash):
                changed = parse_time(row.get("member_last_changed"))
                if row.get("side") not in (None, "", "none") and _same_event(cause, changed):
                    storage.table(CONSENT_AUDIT).upsert_entity(
                        {
                            "PartitionKey": row["PartitionKey"],
                            "RowKey": row["RowKey"],
                            "detail": _with_cause(str(row.get("detail") or ""), cause["text"]),
                        },
                        mode=UpdateMode.MERGE,
                    )
                    found = True
        attempts = int(cause.get("attempts") or 0) + 1
        done.append(
            (
                TransactionOperation.UPSERT,
                {
                    "PartitionKey": partition,
                    "RowKey": member_hash,
                    "pending": not found and attempts < CAUSE_ATTEMPTS,
                    "attempts": attempts,
                },
                {"mode": UpdateMode.MERGE},
            )
        )
        counts["campaign_causes_audited"] += found
    if done:
        storage.write(SYNC_STATE, done)


# ---- values -------------------------------------------------------------------------------------------


def _iso_or_none(moment: datetime | None) -> str | None:
    return iso_seconds(moment) if moment else None


class CampaignStep(Step):
    """The campaigns feature's part in reconciling a unit: the campaign that caused a status change."""

    name = "campaign"

    def __init__(self, storage: StoragePort) -> None:
        self.storage = storage

    def audit_detail(self, unit: Unit, entry: AuditEntry, detail: str) -> str:
        entry.detail = detail
        return audit_detail(self.storage, unit.link.name, unit.run_id, entry)
