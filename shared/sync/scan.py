"""Scan one link: read both sides' changes since the watermarks, group them by member hash, emit batches.

Pages are spilled to bucket files on local disk by the first characters of the member hash, then
each bucket is grouped in memory: peak memory follows the size of one bucket, not of the list.

Longer than 500 lines because the reads of both sides, the spill and the batching share one scan's state, and
the hooks features answer a scan through (interests, mapped fields) are declared beside the reads that use them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shared.adapters.dataverse import DataverseError
from shared.adapters.mailchimp import MailchimpError
from shared.adapters.ports import DataversePort, MailchimpPort
from shared.errors import LinkError
from shared.model.kinds import BY_LIST_CODE
from shared.model.snapshots import Group, MemberSnapshot, PreferenceRow, RecordSnapshot
from shared.model.times import iso_seconds, now, parse_time
from shared.model.wire import BatchMessage
from shared.rules.addresses import email_problem, member_hash, normalize_email
from shared.rules.watermarks import OVERLAP, Watermarks, later, proposal, read_from
from shared.settings import Link, Settings
from shared.state.identity import shard_of
from shared.sync.spill import AliasSpill, Buckets, PreferenceSpill

log = logging.getLogger("consent_bridge.scan")

MAX_ENCODED_BYTES = 44_000  # a batch message stays well under the 64 KB queue limit once base64-encoded
MEMBER_FIELDS = [
    "members.email_address",
    "members.status",
    "members.last_changed",
    "members.contact_id",
    "members.timestamp_opt",
    "members.interests",
    "members.unsubscribe_reason",  # who unsubscribed them (an admin, or the person and why)
    "total_items",
]
ARCHIVED_FIELDS = ["members.email_address", "members.last_changed", "members.contact_id", "total_items"]


@dataclass
class MarketingList:
    list_id: str
    name: str
    dynamic: bool
    member_type: int
    query: str | None

    @property
    def kind(self) -> str:
        return BY_LIST_CODE[self.member_type].name

    @property
    def entity_set(self) -> str:
        return BY_LIST_CODE[self.member_type].entity_set

    @property
    def id_attribute(self) -> str:
        return BY_LIST_CODE[self.member_type].id_attribute

    @property
    def association(self) -> str:
        return BY_LIST_CODE[self.member_type].list_association


class InterestReading(Protocol):
    """One scan's view of its audience's interests."""

    def chosen(self, member: dict[str, Any]) -> list[str] | None:
        """The interest ids a member page shows as chosen; None when interests are not synced."""

    def catalog(self, *, full: bool, counts: Counter[str]) -> list[list[str]]:
        """The audience's interests for this run as [id, name] (read after the member pages)."""

    def rows(self, *, kind: str, since: datetime | None, counts: Counter[str]) -> Iterator[list[PreferenceRow]]:
        """Pages of preference subscription rows of this record kind changed since ``since``."""


class InterestSource(Protocol):
    """Where a scan learns about interests: the preferences feature plugs in here."""

    def reading(self, link: Link, *, dry_run: bool) -> InterestReading: ...


class NoInterests:
    """No feature syncs interests: batches carry none, and preferences are left alone."""

    def reading(self, link: Link, *, dry_run: bool) -> NoInterests:
        return self

    def chosen(self, member: dict[str, Any]) -> list[str] | None:
        return None

    def catalog(self, *, full: bool, counts: Counter[str]) -> list[list[str]]:
        return []

    def rows(self, *, kind: str, since: datetime | None, counts: Counter[str]) -> Iterator[list[PreferenceRow]]:
        return iter(())


class FieldReading(Protocol):
    """One scan's view of the mapped fields: what to read on each side and the values read."""

    def member_fields(self) -> list[str]:
        """Extra ``fields`` of the member pages (e.g. ``members.merge_fields``)."""

    def columns(self, kind: str) -> list[str]:
        """Extra columns of the records' $select for this record kind."""

    def member_values(self, member: dict[str, Any]) -> dict[str, Any] | None:
        """The mapped merge fields' values a member page shows; None when none are mapped."""

    def record_values(self, row: dict[str, Any], kind: str) -> dict[str, Any] | None:
        """The mapped columns' values of a record row; None when none are mapped for its kind."""

    def prepare(self, *, full: bool, counts: Counter[str]) -> None:
        """Called once per scan after the pages: refresh what the run's reconcile needs (merge field types)."""


class FieldSource(Protocol):
    """Where a scan learns about mapped fields: the fields feature plugs in here."""

    def reading(self, link: Link, *, dry_run: bool) -> FieldReading: ...


class NoFields:
    """No feature maps fields: pages and $selects carry none."""

    def reading(self, link: Link, *, dry_run: bool) -> NoFields:
        return self

    def member_fields(self) -> list[str]:
        return []

    def columns(self, kind: str) -> list[str]:
        return []

    def member_values(self, member: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def record_values(self, row: dict[str, Any], kind: str) -> dict[str, Any] | None:
        return None

    def prepare(self, *, full: bool, counts: Counter[str]) -> None:
        return None


class ChangeWatch(Protocol):
    """Shown every change a scan reads; counts those no real-time event announced (the realtime feature)."""

    def saw(self, side: str, member_hash: str, changed: datetime) -> None: ...

    def missed(self, started: dict[str, datetime | None]) -> Counter[str]:
        """Per side, the changes seen that no event announced; ``started`` is each service's clock at the start."""


@dataclass
class ScanOutcome:
    batch_ids: list[str]
    proposed: Watermarks
    counts: Counter[str] = field(default_factory=Counter)
    skips: list[tuple[str, str]] = field(default_factory=list)  # (record id, reason) for unusable records


def read_marketing_list(dataverse: DataversePort, link_name: str, list_id: str) -> MarketingList:
    try:
        row = dataverse.get(f"lists({list_id})", params={"$select": "listname,type,createdfromcode,query,statecode"})
    except DataverseError as exc:
        if exc.status == 404:
            raise LinkError(
                f"link {link_name}",
                f"marketing list {list_id} does not exist in Dataverse",
                "check SYNC_LINKS marketingListId",
            ) from None
        raise
    code = int(row.get("createdfromcode") or 0)
    if code not in BY_LIST_CODE:
        raise LinkError(
            f"link {link_name}",
            f"marketing list {list_id} has member type {code}",
            "expected 1 (account), 2 (contact) or 4 (lead)",
        )
    if int(row.get("statecode") or 0) != 0:
        raise LinkError(
            f"link {link_name}", f"marketing list {list_id} is inactive", "reactivate it or remove the link"
        )
    return MarketingList(list_id, str(row.get("listname") or ""), bool(row.get("type")), code, row.get("query"))


def record_columns(mlist: MarketingList, opt_out_columns: tuple[str, ...], status_column: str | None) -> list[str]:
    columns = [mlist.id_attribute, "emailaddress1", "statecode", "modifiedon", *opt_out_columns]
    return [*columns, status_column] if status_column else columns


def to_record(
    row: dict[str, Any], mlist: MarketingList, opt_out_columns: tuple[str, ...], status_column: str | None
) -> RecordSnapshot:
    return RecordSnapshot(
        record_id=str(row[mlist.id_attribute]),
        kind=mlist.kind,
        email=row.get("emailaddress1"),
        opt_out={c: bool(row.get(c)) for c in opt_out_columns},
        modifiedon=datetime.fromisoformat(str(row["modifiedon"]).replace("Z", "+00:00")),
        state=int(row.get("statecode") or 0),
        status_code=row.get(status_column) if status_column else None,
    )


def dynamic_fetch(query: str, mlist: MarketingList, columns: list[str], since: datetime | None) -> str:
    """The list's own FetchXML with our columns, and a modifiedon condition for a delta read."""
    try:
        fetch = ET.fromstring(query)  # noqa: S314
    except ET.ParseError as exc:
        raise LinkError(
            f"dynamic marketing list {mlist.list_id}",
            f"its query is not valid FetchXML ({exc})",
            "correct the list's query in Dynamics",
        ) from None
    entity = fetch.find("entity")
    if entity is None or entity.get("name") != mlist.kind:
        raise LinkError(f"dynamic marketing list {mlist.list_id}", f"its query must select {mlist.kind} rows")
    for child in list(entity):
        if child.tag in ("attribute", "all-attributes", "order"):
            entity.remove(child)
    for column in columns:
        ET.SubElement(entity, "attribute", name=column)
    ET.SubElement(entity, "order", attribute=mlist.id_attribute)
    if since is not None:
        wrapper = ET.Element("filter", type="and")
        for existing in entity.findall("filter"):
            entity.remove(existing)
            wrapper.append(existing)
        ET.SubElement(wrapper, "condition", attribute="modifiedon", operator="ge", value=iso_seconds(since))
        entity.append(wrapper)
    for attribute in ("count", "page", "paging-cookie"):
        fetch.attrib.pop(attribute, None)
    return ET.tostring(fetch, encoding="unicode")


def scan(
    *,
    link: Link,
    settings: Settings,
    dataverse: DataversePort,
    mailchimp: MailchimpPort,
    watermarks: Watermarks,
    full: bool,
    run_id: str,
    mapped_records: Callable[[], Iterator[tuple[str, list[str]]]],
    retries: list[str],
    send: Callable[[BatchMessage], None],
    indexes: tuple[Any, Any] | None = None,
    interests: InterestSource | None = None,
    dry_run: bool = False,
    fields: FieldSource | None = None,
    changes: ChangeWatch | None = None,
    meet: Iterable[str] = (),
) -> ScanOutcome:
    """Reads both sides and returns the batches to reconcile and the watermarks to commit afterwards.

    ``interests`` answers what the audience's interests are (the preferences feature); without it the
    batches carry none and preferences are left alone. ``meet`` names member hashes a feature wants
    reconciled in this run although neither read shows them (a user edited a row of theirs that is not
    the record itself)."""
    counts: Counter[str] = Counter()
    skips: list[tuple[str, str]] = []
    skipped_ids: set[str] = set()
    fresh = watermarks.completed_runs == 0
    mlist = read_marketing_list(dataverse, link.name, link.marketing_list_id)
    dataverse_started = dataverse.last_server_time  # Dataverse's clock as the read begins
    mapped = (fields or NoFields()).reading(link, dry_run=dry_run)
    columns = record_columns(mlist, settings.opt_out_columns, settings.subscriber_status_column)
    columns += [c for c in mapped.columns(mlist.kind) if c not in columns]
    proposed = proposal(watermarks)
    watch = (interests or NoInterests()).reading(link, dry_run=dry_run)
    with tempfile.TemporaryDirectory(prefix="cbr-scan-") as directory:
        buckets = Buckets(directory)
        record_aliases = AliasSpill(directory, "records")
        contact_aliases = AliasSpill(directory, "contacts")
        preference_rows = PreferenceSpill(directory)

        def add_record(row: dict[str, Any]) -> None:
            record = to_record(row, mlist, settings.opt_out_columns, settings.subscriber_status_column)
            record.fields = mapped.record_values(row, mlist.kind)
            counts["dataverse_read"] += 1
            email = normalize_email(record.email)
            if email is None:
                if record.record_id not in skipped_ids:  # a record can be read twice (changed and newly joined)
                    skipped_ids.add(record.record_id)
                    skips.append((record.record_id, email_problem(record.email) or "invalid-email"))
                return
            buckets.add("record", member_hash(email), record.encode())
            if changes is not None:
                changes.saw("dataverse", member_hash(email), record.modifiedon)
            record_aliases.add(record.record_id, member_hash(email))
            proposed.dataverse_records = later(proposed.dataverse_records, record.modifiedon)

        since_records = read_from(watermarks.dataverse_records, full=full)
        for page in _records(dataverse, mlist, columns, since_records):
            for row in page:
                add_record(row)
        if not mlist.dynamic and not full and watermarks.dataverse_members is not None:
            # records that joined the list since the watermark without being edited (joining a list does not
            # touch a record's modifiedon); edited ones came with the first query
            joined = joined_fetch(mlist, columns, watermarks.dataverse_members - OVERLAP, since_records)
            for page in dataverse.iter_fetchxml(mlist.entity_set, joined):
                for row in page:
                    add_record(row)
        if not mlist.dynamic:
            # memberships are read by their createdon, on the same Dataverse clock as modifiedon
            proposed.dataverse_members = proposed.dataverse_records or watermarks.dataverse_members

        since_members = read_from(watermarks.mailchimp, full=full)
        mailchimp_started: datetime | None = None
        for page in _member_pages(mailchimp, link, since_members, mapped.member_fields()):
            # Mailchimp's clock when the first page was served (slightly after the read began: the overlap
            # covers the difference)
            mailchimp_started = mailchimp_started or mailchimp.last_server_time
            for member in page:
                snapshot = MemberSnapshot(
                    member["email_address"],
                    member["status"],
                    datetime.fromisoformat(member["last_changed"]),
                    member.get("contact_id"),
                    parse_time(member.get("timestamp_opt")),
                    watch.chosen(member),
                    mapped.member_values(member),
                    member.get("unsubscribe_reason"),
                )
                counts["mailchimp_read"] += 1
                buckets.add("member", member_hash(snapshot.email), snapshot.encode())
                if changes is not None:
                    changes.saw("mailchimp", member_hash(snapshot.email), snapshot.last_changed)
                if snapshot.contact_id:
                    contact_aliases.add(snapshot.contact_id, member_hash(snapshot.email))
                proposed.mailchimp = later(proposed.mailchimp, snapshot.last_changed)

        if full:
            # archived members are listed only when asked for; a record meeting one must not bring it back
            counts["archived_reads"] += 1
            for page in archived_pages(mailchimp, link.audience_id):
                for member in page:
                    counts["mailchimp_archived_read"] += 1
                    hashed = member_hash(member["email_address"])
                    buckets.add("archived", hashed, archived_snapshot(member).encode())

        for payload in retries:
            for group in json.loads(payload):
                buckets.add("retry", group[0], group)
                counts["retried"] += 1
        for wanted in meet:
            buckets.add("retry", wanted, Group(wanted, "").encode())  # merged into what the reads found
            counts["met_for_features"] += 1

        mapped.prepare(full=full, counts=counts)
        catalog = watch.catalog(full=full, counts=counts)
        if catalog:
            for rows in watch.rows(kind=mlist.kind, since=since_records, counts=counts):
                for preference in rows:
                    preference_rows.add(preference)
            counts["preference_rows_read"] += preference_rows.rows
            counts["preference_rows_unmapped"] += preference_rows.resolve(
                record_aliases,
                indexes[0] if indexes is not None else None,
                fresh=fresh,
                add=lambda under, row: buckets.add("preference", under, row.encode()),
            )

        if changes is not None and not dry_run:
            started = {"mailchimp": mailchimp_started, "dataverse": dataverse_started}
            for side, n in changes.missed(started).items():
                counts[f"missed_by_webhooks:{side}"] += n

        # The next run reads from when this one began (on each service's clock), less the overlap: whatever
        # changed during this run, its own writes included, is read again then; nothing older is.
        if dataverse_started is not None:
            proposed.dataverse_records = dataverse_started
            if not mlist.dynamic:
                proposed.dataverse_members = dataverse_started
        if mailchimp_started is not None:
            proposed.mailchimp = mailchimp_started
        if indexes is not None:
            counts["new_records"] += record_aliases.resolve(
                indexes[0], fresh=fresh, on_move=lambda key, new, old: buckets.add("moved", new, [key, old])
            )
            counts["new_contacts"] += contact_aliases.resolve(
                indexes[1], fresh=fresh, on_move=lambda key, new, old: buckets.add("renamed", new, old)
            )

        map_rows = 0
        if full and not fresh:
            for key, record_ids in mapped_records():
                buckets.add("mapped", key, record_ids)
                map_rows += 1

        batch_ids = []
        for batch in _batches(
            buckets.groups(full=full),
            link.name,
            run_id,
            fresh=fresh,
            full=full,
            size=settings.batch_size,
            counts=counts,
            keep_unmatched=not fresh,
            columns=settings.opt_out_columns,
            interests=catalog,
        ):
            send(batch)  # queued as it is made: the scan never holds more than one batch
            batch_ids.append(batch.batch_id)
    if full:
        proposed.last_full = dataverse_started or now()
        proposed.map_rows = map_rows
    counts["batches"] = len(batch_ids)
    return ScanOutcome(batch_ids, proposed, counts, skips)


def _records(
    dataverse: DataversePort, mlist: MarketingList, columns: list[str], since: datetime | None
) -> Iterator[list[dict[str, Any]]]:
    if mlist.dynamic:
        if not mlist.query:
            raise LinkError(f"dynamic marketing list {mlist.list_id}", "it has no query", "give it one in Dynamics")
        yield from dataverse.iter_fetchxml(mlist.entity_set, dynamic_fetch(mlist.query, mlist, columns, since))
        return
    member_filter = f"{mlist.association}/any(l:l/listid eq {mlist.list_id})"
    if since is not None:
        member_filter += f" and modifiedon ge {iso_seconds(since)}"
    yield from dataverse.iter_pages(mlist.entity_set, select=columns, filter=member_filter)


def joined_fetch(
    mlist: MarketingList, columns: list[str], joined_since: datetime, modified_before: datetime | None
) -> str:
    """FetchXML for the list's members whose membership is newer than a time and whose row is not."""
    fetch = ET.Element("fetch")
    entity = ET.SubElement(fetch, "entity", name=mlist.kind)
    for column in columns:
        ET.SubElement(entity, "attribute", name=column)
    ET.SubElement(entity, "order", attribute=mlist.id_attribute)
    if modified_before is not None:
        row_filter = ET.SubElement(entity, "filter", type="and")
        ET.SubElement(
            row_filter, "condition", attribute="modifiedon", operator="lt", value=iso_seconds(modified_before)
        )
    link = ET.SubElement(
        entity,
        "link-entity",
        name="listmember",
        attrib={"from": "entityid", "to": mlist.id_attribute, "intersect": "true", "link-type": "inner"},
    )
    link_filter = ET.SubElement(link, "filter", type="and")
    ET.SubElement(link_filter, "condition", attribute="listid", operator="eq", value=mlist.list_id)
    ET.SubElement(link_filter, "condition", attribute="createdon", operator="ge", value=iso_seconds(joined_since))
    return ET.tostring(fetch, encoding="unicode")


def archived_pages(mailchimp: MailchimpPort, audience_id: str) -> Iterator[list[dict[str, Any]]]:
    """The audience's archived members, which a member read lists only when asked for by status, in pages of
    ``PAGE_SIZE_MAX`` (a shorter page is the last): the address, when it was archived and the contact id."""
    return mailchimp.iter_member_pages(audience_id, since_last_changed=None, fields=ARCHIVED_FIELDS, status="archived")


def archived_snapshot(member: dict[str, Any]) -> MemberSnapshot:
    """An archived member as a read shows it: the address, and when it was archived."""
    return MemberSnapshot(
        member["email_address"],
        "archived",
        parse_time(member.get("last_changed")) or now(),
        member.get("contact_id"),
        None,
    )


def _member_pages(
    mailchimp: MailchimpPort, link: Link, since: datetime | None, extra: list[str] | None = None
) -> Iterator[list[dict[str, Any]]]:
    try:
        yield from mailchimp.iter_member_pages(
            link.audience_id, since_last_changed=since, fields=[*MEMBER_FIELDS, *(extra or [])], newest_first=True
        )
    except MailchimpError as exc:
        if exc.status == 404:
            raise LinkError(
                f"link {link.name}",
                f"Mailchimp audience {link.audience_id} does not exist",
                "check SYNC_LINKS audienceId",
            ) from None
        raise


def _batches(
    groups: Iterator[Group],
    link: str,
    run_id: str,
    *,
    fresh: bool,
    full: bool,
    size: int,
    counts: Counter[str],
    keep_unmatched: bool,
    columns: tuple[str, ...],
    interests: list[list[str]] | None = None,
) -> Iterator[BatchMessage]:
    pending: list[Group] = []
    number = 0

    def emit(chunk: list[Group]) -> Iterator[BatchMessage]:
        nonlocal number
        message = BatchMessage(link, run_id, "", fresh, full, chunk, list(columns), interests or [])
        encoded = message.encode()
        if len(encoded["groups"]) > MAX_ENCODED_BYTES and len(chunk) > 1:
            half = len(chunk) // 2
            yield from emit(chunk[:half])
            yield from emit(chunk[half:])
            return
        number += 1
        digest = hashlib.sha1(encoded["groups"].encode(), usedforsecurity=False).hexdigest()[:10]
        message.batch_id = f"b{number:05d}-{digest}"
        yield message

    for group in groups:
        if not group.records and not group.removed and not keep_unmatched:
            counts["mailchimp_only"] += 1  # a member of the audience who is not in the marketing list
            continue
        pending.append(group)
        if len(pending) >= size:
            cut = _shard_boundary(pending)
            yield from emit(pending[:cut])
            pending = pending[cut:]
    if pending:
        yield from emit(pending)


def _shard_boundary(groups: list[Group]) -> int:
    """Where to cut a full batch so that no identity-map shard is split between two batches, if possible."""
    last = shard_of(groups[-1].member_hash)
    for index in range(len(groups) - 1, len(groups) // 2, -1):
        if shard_of(groups[index - 1].member_hash) != last:
            return index if shard_of(groups[index].member_hash) == last else len(groups)
    return len(groups)
