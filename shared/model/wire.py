"""The batch message: how a scan hands its groups to reconcile, through the run's ledger and the batch queue.

The encoding is compact (short keys, epoch seconds, one character per flag, zlib) because a batch must fit a
64 KB queue message; the scan that builds it checks the size. The format is stored, so it carries a version:
a message without one is version 1, the format every release so far has written.

The member hash is not computed here (model sits below rules, where the only hash lives): whoever decodes a
message passes ``shared.rules.addresses.member_hash`` as ``hasher``.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.errors import StoredFormatError
from shared.model.kinds import BY_WIRE_CODE, KINDS
from shared.model.snapshots import Group, MemberSnapshot, PreferenceRow, RecordSnapshot
from shared.model.times import epoch, from_epoch, now

WIRE_VERSION = 1  # the version encode writes
READABLE_VERSIONS = (1,)  # a tuple: a damaged message may hold an unhashable version

Hasher = Callable[[str], str]  # an address to its member hash


def pack(group: Group, columns: list[str], interests: list[str] | None = None) -> list[Any]:
    """A group in as few bytes as a queue message allows: what can be derived is left out.

    The member hash is derived from the address (kept only for a group with no address); members and records
    carry the group's address; opt-out columns are one character each, in the message's column order; a
    member's interests are one character each and preference rows name their interest by position, both in
    the message's interest order.
    """
    interests = interests or []
    position = {interest_id: n for n, interest_id in enumerate(interests)}
    head = group.email or f"#{group.member_hash}"
    member: list[Any] | None = None
    if group.member is not None:
        m = group.member
        # the contact id only matters to reconcile for an address change; the scan has used it already
        contact_id = m.contact_id if group.moved or group.renamed_from else None
        member = [m.status, epoch(m.last_changed), contact_id, epoch(m.opted_in)]
        if m.interests is not None and interests:
            chosen = set(m.interests)
            member.append("".join("1" if i in chosen else "0" for i in interests))
        # after the interests' place: the mapped merge fields, then the unsubscribe reason (None: not read)
        tail = [m.merge_fields, m.unsubscribe_reason]
        while tail and tail[-1] is None:
            tail.pop()
        if tail:
            member += [""] * (5 - len(member)) + tail
    records = [
        [
            r.record_id,
            KINDS[r.kind].wire_code,
            "".join("1" if r.opt_out.get(c) else "0" for c in columns),
            epoch(r.modifiedon),
            r.state,
            r.status_code,
            *([r.fields] if r.fields is not None else []),
        ]
        for r in group.records
    ]
    packed: list[Any] = [head, member, int(group.member_seen), records]
    preferences = [
        [
            p.record_id,
            KINDS[p.kind].wire_code,
            position[p.interest_id],
            int(p.opted_in),
            epoch(p.modifiedon),
            *([p.row_id] if p.row_id else []),
        ]
        for p in group.preferences
        if p.interest_id in position
    ]
    extras: list[Any] = [group.removed, group.moved, group.renamed_from, preferences]
    while extras and not extras[-1]:
        extras.pop()
    return packed + extras


def unpack(data: list[Any], columns: list[str], interests: list[str] | None = None, *, hasher: Hasher) -> Group:
    """The group ``pack`` made; ``hasher`` gives the member hash of a group that travelled with its address."""
    interests = interests or []
    head: str = data[0]
    email = "" if head.startswith("#") else head
    member_hash = head[1:] if head.startswith("#") else hasher(email)
    member = None
    if data[1] is not None:
        status, changed, contact_id, opted_in, *chosen = data[1]
        member = MemberSnapshot(email, status, from_epoch(changed) or now(), contact_id, from_epoch(opted_in))
        if chosen and chosen[0]:
            member.interests = [i for i, flag in zip(interests, chosen[0], strict=True) if flag == "1"]
        if len(chosen) > 1:
            member.merge_fields = chosen[1]
        if len(chosen) > 2:
            member.unsubscribe_reason = chosen[2]
    records = [
        RecordSnapshot(
            rid,
            BY_WIRE_CODE[code].name,
            email,
            {c: flag == "1" for c, flag in zip(columns, flags, strict=True)},
            from_epoch(changed) or now(),
            state,
            status_code,
            fields[0] if fields else None,
        )
        for rid, code, flags, changed, state, status_code, *fields in data[3]
    ]
    extras = [*data[4:], None, None, None, None]
    preferences = [
        PreferenceRow(
            rid,
            BY_WIRE_CODE[code].name,
            interests[n],
            bool(opted),
            from_epoch(changed) or now(),
            row_id[0] if row_id else None,
        )
        for rid, code, n, opted, changed, *row_id in extras[3] or []
    ]
    return Group(
        member_hash, email, member, bool(data[2]), records, extras[0] or [], extras[1] or [], extras[2], preferences
    )


@dataclass
class BatchMessage:
    link: str
    run_id: str
    batch_id: str
    fresh: bool  # the link has no identity map yet: nothing to look up
    full: bool
    groups: list[Group]
    columns: list[str] = field(default_factory=list)  # the opt-out columns, in the order packed records use
    # the audience's interests as [id, name], in the order packed members and preference rows use; empty: the
    # audience has none (or the catalog is unknown) and preferences are left alone
    interests: list[list[str]] = field(default_factory=list)

    @property
    def interest_ids(self) -> list[str]:
        return [interest_id for interest_id, _ in self.interests]

    def encode(self) -> dict[str, Any]:
        ids = self.interest_ids
        payload = json.dumps([pack(g, self.columns, ids) for g in self.groups], separators=(",", ":")).encode()
        encoded: dict[str, Any] = {
            "v": WIRE_VERSION,
            "link": self.link,
            "run": self.run_id,
            "batch": self.batch_id,
            "fresh": self.fresh,
            "full": self.full,
            "columns": self.columns,
            "groups": base64.b64encode(zlib.compress(payload, 9)).decode(),
        }
        if self.interests:
            encoded["interests"] = self.interests
        return encoded

    @classmethod
    def decode(cls, message: dict[str, Any], *, hasher: Hasher) -> BatchMessage:
        """The batch ``encode`` wrote, in any readable version; ``hasher`` is the member hash of an address.

        Raises StoredFormatError for a version this release cannot read."""
        version = message.get("v", 1)  # written before versions existed: the first format
        if version not in READABLE_VERSIONS:
            raise StoredFormatError(
                f"batch {message.get('batch')} of run {message.get('run')} of link {message.get('link')}",
                f"the batch message is in format version {version!r}, which this version of Consent Bridge cannot read",
                "it was written by a newer version of Consent Bridge: deploy that version, or let this run fail "
                "and start a new one",
            )
        groups = json.loads(zlib.decompress(base64.b64decode(message["groups"])))
        columns = list(message.get("columns") or [])
        interests = [list(pair) for pair in message.get("interests") or []]
        ids = [interest_id for interest_id, _ in interests]
        return cls(
            message["link"],
            message["run"],
            message["batch"],
            bool(message["fresh"]),
            bool(message["full"]),
            [unpack(g, columns, ids, hasher=hasher) for g in groups],
            columns,
            interests,
        )
