"""Scan one link: read both sides' changes since the watermarks, group them by member hash, emit batches.

Pages are spilled to bucket files on local disk by the first characters of the member hash, then
each bucket is grouped in memory: peak memory follows the size of one bucket, not of the list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.features.preferences import core as preferences
from shared.model.snapshots import MEMBER_TYPES, BatchMessage, Group, MemberSnapshot, PreferenceRow, RecordSnapshot
from shared.rules.consent import email_problem, member_hash, normalize_email
from shared.state.identity import alias_bucket, shard_of
from shared.state.ledger import Watermarks

log = logging.getLogger("consent_bridge.scan")

OVERLAP = timedelta(minutes=5)  # re-read a little before each watermark; the merge makes re-reads harmless
BUCKETS = 64
MAX_ENCODED_BYTES = 44_000  # a batch message stays well under the 64 KB queue limit once base64-encoded
MEMBER_FIELDS = [
    "members.email_address",
    "members.status",
    "members.last_changed",
    "members.contact_id",
    "members.timestamp_opt",
    "members.interests",
    "total_items",
]


class LinkError(RuntimeError):
    """A link's marketing list or audience is missing or unusable; the message names the link."""


@dataclass
class MarketingList:
    list_id: str
    name: str
    dynamic: bool
    member_type: int
    query: str | None

    @property
    def kind(self) -> str:
        return MEMBER_TYPES[self.member_type][0]

    @property
    def entity_set(self) -> str:
        return MEMBER_TYPES[self.member_type][1]

    @property
    def id_attribute(self) -> str:
        return MEMBER_TYPES[self.member_type][2]

    @property
    def association(self) -> str:
        return MEMBER_TYPES[self.member_type][3]


@dataclass
class ScanOutcome:
    batch_ids: list[str]
    proposed: Watermarks
    counts: Counter[str] = field(default_factory=Counter)
    skips: list[tuple[str, str]] = field(default_factory=list)  # (record id, reason) for unusable records


def read_marketing_list(dataverse: Any, link_name: str, list_id: str) -> MarketingList:
    from shared.adapters.dataverse import DataverseError

    try:
        row = dataverse.get(f"lists({list_id})", params={"$select": "listname,type,createdfromcode,query,statecode"})
    except DataverseError as exc:
        if exc.status == 404:
            raise LinkError(
                f"link {link_name}: marketing list {list_id} does not exist in Dataverse; "
                f"check SYNC_LINKS marketingListId"
            ) from None
        raise
    code = int(row.get("createdfromcode") or 0)
    if code not in MEMBER_TYPES:
        raise LinkError(
            f"link {link_name}: marketing list {list_id} has member type {code}; "
            f"expected 1 (account), 2 (contact) or 4 (lead)"
        )
    if int(row.get("statecode") or 0) != 0:
        raise LinkError(f"link {link_name}: marketing list {list_id} is inactive; reactivate it or remove the link")
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
            f"dynamic marketing list {mlist.list_id} has a query that is not valid FetchXML: {exc}"
        ) from None
    entity = fetch.find("entity")
    if entity is None or entity.get("name") != mlist.kind:
        raise LinkError(f"dynamic marketing list {mlist.list_id}: its query must select {mlist.kind} rows")
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
        ET.SubElement(
            wrapper, "condition", attribute="modifiedon", operator="ge", value=since.strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        entity.append(wrapper)
    for attribute in ("count", "page", "paging-cookie"):
        fetch.attrib.pop(attribute, None)
    return ET.tostring(fetch, encoding="unicode")


def odata_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class AliasSpill:
    """(key, member hash) pairs of one kind (record ids, Mailchimp contact ids), spilled by key prefix,
    then compared with the stored index one bucket at a time: a key under a new hash is an address change."""

    def __init__(self, directory: str, kind: str) -> None:
        self.directory = directory
        self.kind = kind
        self.files: dict[str, Any] = {}

    def add(self, key: str, under: str) -> None:
        first = alias_bucket(key)
        handle = self.files.get(first)
        if handle is None:
            handle = self.files[first] = open(  # noqa: SIM115 - closed in resolve
                os.path.join(self.directory, f"{self.kind}-{ord(first):03d}.txt"), "w+", encoding="utf-8"
            )
        handle.write(f"{key}\t{under}\n")

    def peek(self, first: str) -> dict[str, str]:
        """The keys spilled under one first character so far, and their hashes (the file stays open)."""
        handle = self.files.get(first)
        if handle is None:
            return {}
        handle.seek(0)
        current = dict(line.rstrip("\n").split("\t") for line in handle)
        handle.seek(0, os.SEEK_END)
        return current

    def resolve(self, index: Any, *, fresh: bool, on_move: Callable[[str, str, str], None]) -> int:
        """Calls on_move(key, new hash, old hash) for every key now under another hash; records new keys.

        Returns the number of keys seen for the first time (written to the index now: they had no entry, so
        nothing is lost if the run stops; moved keys are rewritten by reconcile once the move is applied).
        """
        new_keys = 0
        for first, handle in sorted(self.files.items()):
            handle.seek(0)
            current = dict(line.rstrip("\n").split("\t") for line in handle)
            handle.close()
            known = {} if fresh else index.read_range(f"s:{first}", f"s:{first}~")
            fresh_entries = {key: h for key, h in current.items() if key not in known}
            for key, now_under in current.items():
                old = known.get(key)
                if old is not None and old != now_under:
                    on_move(key, now_under, old)
            if fresh_entries:
                index.update(fresh_entries)
                new_keys += len(fresh_entries)
        return new_keys


class PreferenceSpill:
    """Subscription rows read by the scan, spilled by the first character of their record id, then given the
    member hash of their record: the one read in this run, else the one the records index holds."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.files: dict[str, Any] = {}
        self.rows = 0

    def add(self, row: PreferenceRow) -> None:
        first = alias_bucket(row.record_id)
        handle = self.files.get(first)
        if handle is None:
            handle = self.files[first] = open(  # noqa: SIM115 - closed in resolve
                os.path.join(self.directory, f"preferences-{ord(first):03d}.jsonl"), "w+", encoding="utf-8"
            )
        handle.write(json.dumps(row.encode(), separators=(",", ":")) + "\n")
        self.rows += 1

    def resolve(
        self, records: AliasSpill, index: Any, *, fresh: bool, add: Callable[[str, PreferenceRow], None]
    ) -> int:
        """Calls add(member hash, row) for every row whose record the link knows; returns the rows left out."""
        unknown = 0
        for first, handle in sorted(self.files.items()):
            handle.seek(0)
            rows = [PreferenceRow.decode(json.loads(line)) for line in handle]
            handle.close()
            current = records.peek(first)
            known: dict[str, str] = {}
            if index is not None and not fresh and any(r.record_id not in current for r in rows):
                known = index.read_range(f"s:{first}", f"s:{first}~")
            for row in rows:
                under = current.get(row.record_id) or known.get(row.record_id)
                if under is None:
                    unknown += 1  # a record that has never been in this link's marketing list
                    continue
                add(under, row)
        return unknown


class Buckets:
    """Spills (kind, hash, payload) lines to files by hash prefix, then yields groups bucket by bucket."""

    def __init__(self, directory: str) -> None:
        self.files = [
            open(os.path.join(directory, f"{i:02d}.jsonl"), "w+", encoding="utf-8")  # noqa: SIM115
            for i in range(BUCKETS)
        ]

    def add(self, kind: str, member_hash: str, payload: Any) -> None:
        bucket = int(member_hash[:2], 16) * BUCKETS // 256
        self.files[bucket].write(json.dumps([kind, member_hash, payload], separators=(",", ":")) + "\n")

    def groups(self, *, full: bool) -> Iterator[Group]:
        for handle in self.files:
            handle.seek(0)
            groups: dict[str, Group] = {}
            mapped: dict[str, list[str]] = {}
            for line in handle:
                kind, key, payload = json.loads(line)
                if kind == "mapped":
                    mapped[key] = payload
                    continue
                if kind in ("moved", "renamed", "preference"):
                    group = groups.get(key) or groups.setdefault(key, Group(key, "", member_seen=full))
                    if kind == "moved" and payload not in group.moved:
                        group.moved.append(payload)
                    elif kind == "renamed":
                        group.renamed_from = payload
                    elif kind == "preference":
                        group.preferences.append(PreferenceRow.decode(payload))
                    continue
                group = groups.get(key)
                if kind == "retry":
                    retried = Group.decode(payload)
                    if group is None:
                        groups[key] = retried
                    else:  # a fresh read wins; keep what only the retry knows
                        group.member = group.member or retried.member
                        known = {r.record_id for r in group.records}
                        group.records += [r for r in retried.records if r.record_id not in known]
                        read = {(p.record_id, p.interest_id) for p in group.preferences}
                        group.preferences += [
                            p for p in retried.preferences if (p.record_id, p.interest_id) not in read
                        ]
                    continue
                if group is None:
                    group = groups[key] = Group(key, payload[0] if kind == "member" else "", member_seen=full)
                if kind == "member":
                    group.member = MemberSnapshot.decode(payload)
                    group.email = group.member.email.strip().lower()
                    group.member_seen = True
                else:
                    record = RecordSnapshot.decode(payload)
                    if all(r.record_id != record.record_id for r in group.records):
                        group.records.append(record)
                    group.email = group.email or normalize_email(record.email) or ""
            for key, record_ids in mapped.items():  # full pass: mapped records no longer in the list
                group = groups.get(key)
                seen = {r.record_id for r in group.records} if group else set()
                gone = [rid for rid in record_ids if rid not in seen]
                if gone:
                    if group is None:
                        group = groups[key] = Group(key, "", member_seen=full)
                    group.removed = gone
            for key in sorted(groups):
                yield groups[key]
            handle.close()


def scan(
    *,
    link: Any,
    settings: Any,
    dataverse: Any,
    mailchimp: Any,
    watermarks: Watermarks,
    full: bool,
    run_id: str,
    mapped_records: Callable[[], Iterator[tuple[str, list[str]]]],
    retries: list[str],
    send: Callable[[BatchMessage], None],
    indexes: tuple[Any, Any] | None = None,
    state: Any = None,
) -> ScanOutcome:
    """Reads both sides and returns the batches to reconcile and the watermarks to commit afterwards.

    ``state`` is the storage that keeps the link's interest catalog beside its watermarks; a dry run passes
    None and reads the catalog afresh."""
    counts: Counter[str] = Counter()
    skips: list[tuple[str, str]] = []
    skipped_ids: set[str] = set()
    fresh = watermarks.completed_runs == 0
    mlist = read_marketing_list(dataverse, link.name, link.marketing_list_id)
    dataverse_started = getattr(dataverse, "last_server_time", None)  # Dataverse's clock as the read begins
    columns = record_columns(mlist, settings.opt_out_columns, settings.subscriber_status_column)
    proposed = Watermarks(
        watermarks.mailchimp,
        watermarks.dataverse_records,
        watermarks.dataverse_members,
        watermarks.last_full,
        watermarks.map_rows,
        watermarks.completed_runs,
    )
    stored = preferences.load_catalog(state, link.name) if state is not None else None
    watch = preferences.CatalogWatch(stored)
    with tempfile.TemporaryDirectory(prefix="cbr-scan-") as directory:
        buckets = Buckets(directory)
        record_aliases = AliasSpill(directory, "records")
        contact_aliases = AliasSpill(directory, "contacts")
        preference_rows = PreferenceSpill(directory)

        def add_record(row: dict[str, Any]) -> None:
            record = to_record(row, mlist, settings.opt_out_columns, settings.subscriber_status_column)
            counts["dataverse_read"] += 1
            email = normalize_email(record.email)
            if email is None:
                if record.record_id not in skipped_ids:  # a record can be read twice (changed and newly joined)
                    skipped_ids.add(record.record_id)
                    skips.append((record.record_id, email_problem(record.email) or "invalid-email"))
                return
            buckets.add("record", member_hash(email), record.encode())
            record_aliases.add(record.record_id, member_hash(email))
            if proposed.dataverse_records is None or record.modifiedon > proposed.dataverse_records:
                proposed.dataverse_records = record.modifiedon

        since_records = None if full or watermarks.dataverse_records is None else watermarks.dataverse_records - OVERLAP
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

        since_members = None if full or watermarks.mailchimp is None else watermarks.mailchimp - OVERLAP
        mailchimp_started: datetime | None = None
        for page in _member_pages(mailchimp, link, since_members):
            # Mailchimp's clock when the first page was served (slightly after the read began: the overlap
            # covers the difference)
            mailchimp_started = mailchimp_started or getattr(mailchimp, "last_server_time", None)
            for member in page:
                snapshot = MemberSnapshot(
                    member["email_address"],
                    member["status"],
                    datetime.fromisoformat(member["last_changed"]),
                    member.get("contact_id"),
                    _time(member.get("timestamp_opt")),
                    watch.chosen(member),
                )
                counts["mailchimp_read"] += 1
                buckets.add("member", member_hash(snapshot.email), snapshot.encode())
                if snapshot.contact_id:
                    contact_aliases.add(snapshot.contact_id, member_hash(snapshot.email))
                if proposed.mailchimp is None or snapshot.last_changed > proposed.mailchimp:
                    proposed.mailchimp = snapshot.last_changed

        for payload in retries:
            for group in json.loads(payload):
                buckets.add("retry", group[0], group)
                counts["retried"] += 1

        catalog = current_catalog(
            link=link,
            settings=settings,
            mailchimp=mailchimp,
            dataverse=dataverse,
            state=state,
            stored=stored,
            stale=watch.stale,
            full=full,
            dry_run=indexes is None,
            counts=counts,
        )
        if catalog.interests:
            read_preference_rows(dataverse, settings, link, mlist, catalog, since_records, preference_rows, counts)
            counts["preference_rows_unmapped"] += preference_rows.resolve(
                record_aliases,
                indexes[0] if indexes is not None else None,
                fresh=fresh,
                add=lambda under, row: buckets.add("preference", under, row.encode()),
            )

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
            interests=catalog.message_form(),
        ):
            send(batch)  # queued as it is made: the scan never holds more than one batch
            batch_ids.append(batch.batch_id)
    if full:
        proposed.last_full = dataverse_started or _utcnow()
        proposed.map_rows = map_rows
    counts["batches"] = len(batch_ids)
    return ScanOutcome(batch_ids, proposed, counts, skips)


def current_catalog(
    *,
    link: Any,
    settings: Any,
    mailchimp: Any,
    dataverse: Any,
    state: Any,
    stored: preferences.Catalog | None,
    stale: bool,
    full: bool,
    dry_run: bool,
    counts: Counter[str],
) -> preferences.Catalog:
    """The audience's interests for this run. Read from Mailchimp (and mirrored into Dataverse) only on a full
    pass, when a member page showed interests the stored catalog does not match, or when none is stored yet
    for a dry run; otherwise the stored one, so a run with nothing changed makes no catalog call."""
    from shared.adapters.dataverse import DataverseError

    if stored is not None and not full and not stale:
        return stored
    if stored is None and not full and not stale and not dry_run:
        return preferences.Catalog()  # no member has shown an interest, and the last full pass found none
    catalog = preferences.read_catalog(mailchimp, link.audience_id, counts)
    counts["catalog_reads"] += 1
    if dry_run:
        return catalog
    if catalog.interests or (stored is not None and stored.interests):
        names = preferences.Names(settings.dataverse_prefix)
        try:
            changes = preferences.mirror_catalog(dataverse, names, link.audience_id, catalog, counts)
        except DataverseError as exc:
            if exc.status != 404:
                raise
            log.warning(
                "link %s: the marketing preference tables are missing in Dataverse; preferences are not "
                "synced until `python -m shared.cli provision` creates them",
                link.name,
            )
            return preferences.Catalog()
        counts["catalog_changes"] += len(changes)
        for change in changes:
            log.info("link %s: %s", link.name, change)
    if state is not None:
        preferences.save_catalog(state, link.name, catalog)
    return catalog


def read_preference_rows(
    dataverse: Any,
    settings: Any,
    link: Any,
    mlist: MarketingList,
    catalog: preferences.Catalog,
    since: datetime | None,
    spill: PreferenceSpill,
    counts: Counter[str],
) -> None:
    """The subscription rows of the list's record kind changed since the watermark: one paged read."""
    from shared.adapters.dataverse import DataverseError

    names = preferences.Names(settings.dataverse_prefix)
    try:
        for page in preferences.read_rows(
            dataverse, names, audience_id=link.audience_id, kind=mlist.kind, interests=catalog.ids, since=since
        ):
            counts["preference_calls_dataverse"] += 1
            for row in page:
                spill.add(row)
    except DataverseError as exc:
        if exc.status != 404:
            raise
        log.warning(
            "link %s: the preference subscription table is missing in Dataverse; run `python -m shared.cli provision`",
            link.name,
        )
    counts["preference_rows_read"] += spill.rows


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _utcnow() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)


def _records(
    dataverse: Any, mlist: MarketingList, columns: list[str], since: datetime | None
) -> Iterator[list[dict[str, Any]]]:
    if mlist.dynamic:
        if not mlist.query:
            raise LinkError(f"dynamic marketing list {mlist.list_id} has no query")
        yield from dataverse.iter_fetchxml(mlist.entity_set, dynamic_fetch(mlist.query, mlist, columns, since))
        return
    member_filter = f"{mlist.association}/any(l:l/listid eq {mlist.list_id})"
    if since is not None:
        member_filter += f" and modifiedon ge {odata_time(since)}"
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
        ET.SubElement(row_filter, "condition", attribute="modifiedon", operator="lt", value=odata_time(modified_before))
    link = ET.SubElement(
        entity,
        "link-entity",
        name="listmember",
        attrib={"from": "entityid", "to": mlist.id_attribute, "intersect": "true", "link-type": "inner"},
    )
    link_filter = ET.SubElement(link, "filter", type="and")
    ET.SubElement(link_filter, "condition", attribute="listid", operator="eq", value=mlist.list_id)
    ET.SubElement(link_filter, "condition", attribute="createdon", operator="ge", value=odata_time(joined_since))
    return ET.tostring(fetch, encoding="unicode")


def _member_pages(mailchimp: Any, link: Any, since: datetime | None) -> Iterator[list[dict[str, Any]]]:
    from shared.adapters.mailchimp import MailchimpError

    try:
        yield from mailchimp.iter_member_pages(
            link.audience_id, since_last_changed=since, fields=MEMBER_FIELDS, newest_first=True
        )
    except MailchimpError as exc:
        if exc.status == 404:
            raise LinkError(
                f"link {link.name}: Mailchimp audience {link.audience_id} does not exist; check SYNC_LINKS audienceId"
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
