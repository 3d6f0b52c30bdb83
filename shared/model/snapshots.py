"""What a scan hands to reconcile: per member hash, the Mailchimp member and the Dynamics records.

A batch travels as one queue message, so the encoding is compact (short keys, epoch seconds,
zlib) and checked against the 64 KB limit by the scan that builds it.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MEMBER_TYPES = {  # createdfromcode -> (kind, entity set, id attribute, list association)
    1: ("account", "accounts", "accountid", "listaccount_association"),
    2: ("contact", "contacts", "contactid", "listcontact_association"),
    4: ("lead", "leads", "leadid", "listlead_association"),
}
KIND_SETS = {kind: entity_set for kind, entity_set, _, _ in MEMBER_TYPES.values()}


def epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def from_epoch(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@dataclass
class MemberSnapshot:
    """A member as read from Mailchimp."""

    email: str
    status: str
    last_changed: datetime
    contact_id: str | None = None
    opted_in: datetime | None = None  # timestamp_opt
    interests: list[str] | None = None  # the interest ids set to true; None: not read

    def encode(self) -> list[Any]:
        return [
            self.email,
            self.status,
            epoch(self.last_changed),
            self.contact_id,
            epoch(self.opted_in),
            self.interests,
        ]

    @classmethod
    def decode(cls, data: list[Any]) -> MemberSnapshot:
        opted_in = from_epoch(data[4]) if len(data) > 4 else None
        interests = data[5] if len(data) > 5 else None
        return cls(data[0], data[1], from_epoch(data[2]) or datetime.now(UTC), data[3], opted_in, interests)


@dataclass
class RecordSnapshot:
    """A Dynamics record as read from Dataverse.

    ``opt_out`` holds the current value of each OPT_OUT_COLUMNS column; ``state`` is the raw statecode.
    """

    record_id: str
    kind: str
    email: str | None
    opt_out: dict[str, bool]
    modifiedon: datetime
    state: int = 0
    status_code: int | None = None

    @property
    def opted_out(self) -> bool:
        return any(self.opt_out.values())

    @property
    def active(self) -> bool:
        return self.state == 0

    @property
    def writable(self) -> bool:
        # inactive contacts/accounts and qualified or disqualified leads are read-only in Dataverse
        return self.state == 0

    def encode(self) -> list[Any]:
        return [
            self.record_id,
            self.kind,
            self.email,
            self.opt_out,
            epoch(self.modifiedon),
            self.state,
            self.status_code,
        ]

    @classmethod
    def decode(cls, data: list[Any]) -> RecordSnapshot:
        return cls(data[0], data[1], data[2], data[3], from_epoch(data[4]) or datetime.now(UTC), data[5], data[6])


@dataclass
class PreferenceRow:
    """A preference subscription row as read from Dataverse: one record's choice of one interest."""

    record_id: str
    kind: str
    interest_id: str
    opted_in: bool
    modifiedon: datetime
    row_id: str | None = None  # None: the id derived from (record, audience, interest)

    def encode(self) -> list[Any]:
        return [self.record_id, self.kind, self.interest_id, int(self.opted_in), epoch(self.modifiedon), self.row_id]

    @classmethod
    def decode(cls, data: list[Any]) -> PreferenceRow:
        return cls(data[0], data[1], data[2], bool(data[3]), from_epoch(data[4]) or datetime.now(UTC), data[5])


@dataclass
class Group:
    """Everything one batch knows about one member hash of one link."""

    member_hash: str
    email: str
    member: MemberSnapshot | None = None
    member_seen: bool = False  # False: the scan did not read this member (only a delta was read)
    records: list[RecordSnapshot] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # record ids that left the marketing list
    moved: list[list[str]] = field(default_factory=list)  # [record id, old member hash]: address changed in Dynamics
    renamed_from: str | None = None  # old member hash: the member's address changed in Mailchimp
    preferences: list[PreferenceRow] = field(default_factory=list)  # rows of the records changed since the watermark

    def encode(self) -> list[Any]:
        return [
            self.member_hash,
            self.email,
            self.member.encode() if self.member else None,
            int(self.member_seen),
            [r.encode() for r in self.records],
            self.removed,
            self.moved,
            self.renamed_from,
            [p.encode() for p in self.preferences],
        ]

    @classmethod
    def decode(cls, data: list[Any]) -> Group:
        member = MemberSnapshot.decode(data[2]) if data[2] else None
        moved = data[6] if len(data) > 6 else []
        renamed = data[7] if len(data) > 7 else None
        preferences = [PreferenceRow.decode(p) for p in data[8]] if len(data) > 8 else []
        return cls(
            data[0],
            data[1],
            member,
            bool(data[3]),
            [RecordSnapshot.decode(r) for r in data[4]],
            data[5],
            moved,
            renamed,
            preferences,
        )


KIND_CODES = {"contact": "c", "lead": "l", "account": "a"}
KINDS_BY_CODE = {code: kind for kind, code in KIND_CODES.items()}


def pack(group: Group, columns: list[str], interests: list[str] | None = None) -> list[Any]:
    """A group in as few bytes as a queue message allows: what can be derived is left out.

    The member hash is the md5 of the address (kept only for a group with no address); members and records
    carry the group's address; opt-out columns are one character each, in the message's column order; a
    member's interests are one character each and preference rows name their interest by position, both in
    the message's interest order.
    """
    interests = interests or []
    position = {interest_id: n for n, interest_id in enumerate(interests)}
    head = group.email or f"#{group.member_hash}"
    member = None
    if group.member is not None:
        m = group.member
        # the contact id only matters to reconcile for an address change; the scan has used it already
        contact_id = m.contact_id if group.moved or group.renamed_from else None
        member = [m.status, epoch(m.last_changed), contact_id, epoch(m.opted_in)]
        if m.interests is not None and interests:
            chosen = set(m.interests)
            member.append("".join("1" if i in chosen else "0" for i in interests))
    records = [
        [
            r.record_id,
            KIND_CODES[r.kind],
            "".join("1" if r.opt_out.get(c) else "0" for c in columns),
            epoch(r.modifiedon),
            r.state,
            r.status_code,
        ]
        for r in group.records
    ]
    packed: list[Any] = [head, member, int(group.member_seen), records]
    preferences = [
        [
            p.record_id,
            KIND_CODES[p.kind],
            position[p.interest_id],
            int(p.opted_in),
            epoch(p.modifiedon),
            *([p.row_id] if p.row_id else []),
        ]
        for p in group.preferences
        if p.interest_id in position
    ]
    extras = [group.removed, group.moved, group.renamed_from, preferences]
    while extras and not extras[-1]:
        extras.pop()
    return packed + extras


def unpack(data: list[Any], columns: list[str], interests: list[str] | None = None) -> Group:
    import hashlib

    interests = interests or []
    head = data[0]
    email = "" if head.startswith("#") else head
    member_hash = head[1:] if head.startswith("#") else hashlib.md5(email.encode(), usedforsecurity=False).hexdigest()
    member = None
    if data[1] is not None:
        status, changed, contact_id, opted_in, *chosen = data[1]
        member = MemberSnapshot(
            email, status, from_epoch(changed) or datetime.now(UTC), contact_id, from_epoch(opted_in)
        )
        if chosen:
            member.interests = [i for i, flag in zip(interests, chosen[0], strict=True) if flag == "1"]
    records = [
        RecordSnapshot(
            rid,
            KINDS_BY_CODE[kind],
            email,
            {c: flag == "1" for c, flag in zip(columns, flags, strict=True)},
            from_epoch(changed) or datetime.now(UTC),
            state,
            status_code,
        )
        for rid, kind, flags, changed, state, status_code in data[3]
    ]
    extras = [*data[4:], None, None, None, None]
    preferences = [
        PreferenceRow(
            rid,
            KINDS_BY_CODE[kind],
            interests[n],
            bool(opted),
            from_epoch(changed) or datetime.now(UTC),
            row_id[0] if row_id else None,
        )
        for rid, kind, n, opted, changed, *row_id in extras[3] or []
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
        encoded = {
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
    def decode(cls, message: dict[str, Any]) -> BatchMessage:
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
            [unpack(g, columns, ids) for g in groups],
            columns,
            interests,
        )
