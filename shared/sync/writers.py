"""The unit's writes, collected into bulk calls: one batch subscribe, one $batch, tags through the tag segment.

Core consent writes and what the steps add share the same calls: interests ride in the status entries,
preference rows in the record PATCHes' $batch. Calls that exist only because of a step are charged to it
(``{step}_calls_mailchimp``, ``{step}_calls_dataverse``), so the efficiency report can tell them apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from shared.adapters import bulk
from shared.adapters.dataverse import BatchOperation, dataverse_refusal
from shared.adapters.mailchimp import MailchimpError, mailchimp_refusal
from shared.adapters.ports import DataversePort, MailchimpPort
from shared.model.kinds import KIND_SETS
from shared.model.times import now, parse_time
from shared.rules import addresses, consent
from shared.settings import Link
from shared.sync.moves import chosen_interests
from shared.sync.pipeline import UNKNOWN, DataverseWrite, Item, Step, Unit

BATCH_SUBSCRIBE_PAGE = 500  # members per batch subscribe call
BATCH_PAGE = 1000  # requests per $batch call


def pages(items: int, page: int) -> int:
    return -(-items // page)


def member_of(answer: dict[str, Any]) -> consent.Member:
    return consent.Member(
        answer["status"],
        parse_time(answer.get("last_changed")) or now(),
        answer["email_address"],
        parse_time(answer.get("timestamp_opt")),
    )


def write_mailchimp(
    mailchimp: MailchimpPort,
    unit: Unit,
    items: list[Item],
    steps: Sequence[Step],
    counts: Counter[str],
    *,
    statuses: bool = True,
) -> None:
    """One batch subscribe: the status decisions (unless ``statuses`` is off) and whatever the steps add."""
    link = unit.link
    entries: list[Mapping[str, Any]] = []
    with_status: set[str] = set()
    with_fields: dict[str, set[str]] = {step.name: set() for step in steps}
    for item in items:
        write = item.decision.mailchimp if statuses and item.decision else None
        added = {
            step.name: step.mailchimp_fields(unit, item, with_status=write is not None, counts=counts) for step in steps
        }
        added = {name: fields for name, fields in added.items() if fields}
        if write is None and not added:
            continue
        entry: dict[str, Any] = {"email_address": item.email}
        if write is None:
            # a step's fields only: an existing member keeps its status; one archived since the read comes
            # back only once the person confirms
            entry["status_if_new"] = "pending"
            counts["members_written_by_steps"] += 1  # members written for what steps add alone
        elif write.action == "add":
            entry["status_if_new"] = write.status
            with_status.add(item.group.member_hash)
        else:
            entry["status"] = write.status
            with_status.add(item.group.member_hash)
        for name, fields in added.items():
            entry.update(fields)
            with_fields[name].add(item.group.member_hash)
        if link.tag and item.records:
            entry["tags"] = [link.tag]
        entries.append(entry)
    if not entries:
        return
    for step in steps:
        # calls that exist only because of a step's fields are charged to that step
        if with_fields[step.name]:
            counts[f"{step.name}_calls_mailchimp"] += pages(len(entries), BATCH_SUBSCRIBE_PAGE) - pages(
                len(with_status), BATCH_SUBSCRIBE_PAGE
            )
    by_hash = {item.group.member_hash: item for item in items}
    sent = {addresses.member_hash(str(entry["email_address"])): entry for entry in entries}
    while entries:
        entries = _send_entries(mailchimp, unit, entries, by_hash, sent, with_status, with_fields, steps, counts)
        for step in steps:
            # an entry sent again without a merge field a step gave up is that step's call
            if entries and any(
                addresses.member_hash(str(e["email_address"])) in with_fields[step.name] for e in entries
            ):
                counts[f"{step.name}_calls_mailchimp"] += pages(len(entries), BATCH_SUBSCRIBE_PAGE)
                break


def _send_entries(
    mailchimp: MailchimpPort,
    unit: Unit,
    entries: list[Mapping[str, Any]],
    by_hash: dict[str, Item],
    sent: dict[str, Mapping[str, Any]],
    with_status: set[str],
    with_fields: dict[str, set[str]],
    steps: Sequence[Step],
    counts: Counter[str],
) -> list[Mapping[str, Any]]:
    """One batch subscribe of these entries, its answers applied; returns the entries to send again (a step gave
    up a merge field Mailchimp refused, so the rest of the member is written without it)."""
    link = unit.link
    again: list[Mapping[str, Any]] = []
    result = mailchimp.batch_subscribe(link.audience_id, entries, update_existing=True)
    answers = [(m, True) for m in result.new_members] + [(m, False) for m in result.updated_members]
    for answer, created in answers:
        answered = by_hash.get(addresses.member_hash(answer["email_address"]))
        if answered is None:
            continue
        item = answered
        item.member_after = answer["status"]
        item.member_last_changed = parse_time(answer.get("last_changed"))
        item.tagged = bool(link.tag)
        if item.member == UNKNOWN:
            item.member = None if created else member_of(answer)
            chosen = chosen_interests(answer)
            item.member_interests = None if chosen is None else frozenset(chosen)
            if not created:
                item.member_after = None  # decided again once the probe is settled
    for error in result.errors:
        refused = by_hash.get(error.member_hash or "")
        if refused is None:
            continue
        item = refused
        entry = sent.get(item.group.member_hash)
        tag = (error.field or "").removeprefix("merge_fields.")
        merge = entry.get("merge_fields") if entry is not None else None
        if (
            entry is not None
            and isinstance(merge, dict)
            and tag in merge
            and any(
                step.mailchimp_field_refused(unit, item, tag, error.field_message or error.error, counts)
                for step in steps
                if item.group.member_hash in with_fields[step.name]
            )
        ):
            retry = dict(entry)
            retry["merge_fields"] = {k: v for k, v in merge.items() if k != tag}
            sent[item.group.member_hash] = retry
            again.append(retry)
            continue
        reason = mailchimp_refusal(error)
        if item.group.member_hash in with_status:
            item.mailchimp_failed = reason
            counts["mailchimp_refused"] += 1
        for step in steps:
            if item.group.member_hash in with_fields[step.name]:
                step.mailchimp_refused(unit, item, reason, counts)
    return again


def write_dataverse(
    dataverse: DataversePort, unit: Unit, items: list[Item], steps: Sequence[Step], counts: Counter[str]
) -> None:
    """The record PATCHes, then the steps' operations, written by shared/adapters/bulk.py: record PATCHes as
    UpdateMultiple where the table supports it, the rest as $batch (pages of 1,000), one result each in order; a
    step's operation that names a record's write (``travels_with``) goes with it in one change set."""
    operations: list[BatchOperation] = []
    owners: list[tuple[Item, str]] = []
    columns_of: list[list[Step]] = []  # per PATCH, the steps whose columns it carries
    for item in items:
        kinds = {r.record_id: r.kind for r in item.records}
        added = [(step, step.record_columns(unit, item)) for step in steps]
        bodies = {record_id: dict(body) for record_id, body in item.record_writes.items()}
        carriers: dict[str, list[Step]] = {}
        for step, per_record in added:
            for record_id, columns in per_record.items():
                if columns and record_id in kinds:
                    bodies.setdefault(record_id, {}).update(columns)  # one PATCH per record, consent and columns
                    carriers.setdefault(record_id, []).append(step)
        for record_id, body in bodies.items():
            # the answer's modifiedon goes into the base, so the sync's own write is not mistaken later
            # for a person's edit
            operations.append(
                BatchOperation(
                    "PATCH",
                    f"{KIND_SETS[kinds[record_id]]}({record_id})?$select=modifiedon",
                    body,
                    {"If-Match": "*", "Prefer": "return=representation"},
                )
            )
            owners.append((item, record_id))
            columns_of.append(carriers.get(record_id, []))
    extra: list[tuple[Step, DataverseWrite]] = [
        (step, write) for step in steps for write in step.dataverse_writes(unit, items, counts)
    ]
    if not operations and not extra:
        return
    core = sum(1 for item, record_id in owners if record_id in item.record_writes)
    for step in steps:
        # pages that exist only because of the step's operations and its columns' own PATCHes
        own = sum(1 for owner, _ in extra if owner is step) + sum(
            1
            for (item, record_id), carriers in zip(owners, columns_of, strict=True)
            if record_id not in item.record_writes and carriers and carriers[0] is step
        )
        if own:
            counts[f"{step.name}_calls_dataverse"] += pages(core + own, BATCH_PAGE) - pages(core, BATCH_PAGE)
    # plain record PATCHes go as UpdateMultiple where the table supports it, the rest as $batch
    results = bulk.write(dataverse, [*operations, *(operation for _, (operation, _) in extra)])
    for (_, (_, settle)), result in zip(extra, results[len(owners) :], strict=True):
        settle(result)
    for (item, record_id), carrying, result in zip(owners, columns_of, results, strict=False):
        for carrier in carrying:
            carrier.record_patched(unit, item, record_id, result)
        if result.status >= 400 and record_id not in item.record_writes:
            continue  # a PATCH of a step's columns only: the step heard its refusal
        if result.status >= 400:
            item.record_failures[record_id] = dataverse_refusal(result)
            counts["dataverse_refused"] += 1
        elif isinstance(result.body, dict) and result.body.get("modifiedon"):
            written = parse_time(result.body["modifiedon"])
            if written and (item.records_written_at is None or written > item.records_written_at):
                item.records_written_at = written


def write_tags(mailchimp: MailchimpPort, link: Link, items: list[Item], counts: Counter[str]) -> None:
    """The link's tag on every member whose record is in the list, off for those who left it (rule 6)."""
    if not link.tag:
        return
    to_remove = [
        item.email
        for item in items
        if item.group.removed and item.base and item.base.tagged and not item.records and item.email
    ]
    to_add = [
        item.email
        for item in items
        if item.records and not item.tagged and not (item.base and item.base.tagged) and member_exists(item)
    ]
    if to_add:
        try:
            mailchimp.add_tag_members(link.audience_id, link.tag, to_add)
        except MailchimpError as exc:
            if exc.status != 404:
                raise
            # the audience has no such tag yet: tagging one member creates it
            mailchimp.update_member_tags(link.audience_id, addresses.member_hash(to_add[0]), {link.tag: True})
            if to_add[1:]:
                mailchimp.add_tag_members(link.audience_id, link.tag, to_add[1:])
        added = set(to_add)
        for item in items:
            if item.email in added:
                item.tagged = True
    if to_remove:
        result = mailchimp.remove_tag_members(link.audience_id, link.tag, to_remove)
        counts["tags_removed"] += result.changed


def member_exists(item: Item) -> bool:
    if item.member_after:
        return item.member_after != "archived"
    member = item.known_member
    return member is not None and member.status != "archived"
