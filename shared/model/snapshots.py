"""What a scan hands to reconcile: per member hash, the Mailchimp member and the Dynamics records.

These are plain data; ``encode``/``decode`` give the list form a retried group is kept in. The batch message
that carries groups between scan and reconcile is in shared.model.wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.model.times import epoch, from_epoch, now


@dataclass
class MemberSnapshot:
    """A member as read from Mailchimp."""

    email: str
    status: str
    last_changed: datetime
    contact_id: str | None = None
    opted_in: datetime | None = None  # timestamp_opt
    interests: list[str] | None = None  # the interest ids set to true; None: not read
    merge_fields: dict[str, Any] | None = None  # the mapped merge fields' values; None: not read
    unsubscribe_reason: str | None = None  # Mailchimp's, on an unsubscribed member; None: none, or not read
    # what a webhook said caused the status it announced (real-time path): data[reason] and data[campaign_id]
    event_reason: str | None = None
    campaign_id: str | None = None

    def encode(self) -> list[Any]:
        encoded = [
            self.email,
            self.status,
            epoch(self.last_changed),
            self.contact_id,
            epoch(self.opted_in),
            self.interests,
        ]
        cause = [self.unsubscribe_reason, self.event_reason, self.campaign_id]
        if any(value is not None for value in cause):
            return [*encoded, self.merge_fields, *cause]
        return [*encoded, self.merge_fields] if self.merge_fields is not None else encoded

    @classmethod
    def decode(cls, data: list[Any]) -> MemberSnapshot:
        opted_in = from_epoch(data[4]) if len(data) > 4 else None
        interests = data[5] if len(data) > 5 else None
        merge_fields = data[6] if len(data) > 6 else None
        reason, event_reason, campaign_id = [*data[7:10], None, None, None][:3]
        return cls(
            data[0],
            data[1],
            from_epoch(data[2]) or now(),
            data[3],
            opted_in,
            interests,
            merge_fields,
            reason,
            event_reason,
            campaign_id,
        )


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
    fields: dict[str, Any] | None = None  # the mapped columns' values; None: not read

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
            *([self.fields] if self.fields is not None else []),
        ]

    @classmethod
    def decode(cls, data: list[Any]) -> RecordSnapshot:
        fields = data[7] if len(data) > 7 else None
        return cls(data[0], data[1], data[2], data[3], from_epoch(data[4]) or now(), data[5], data[6], fields)


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
        return cls(data[0], data[1], data[2], bool(data[3]), from_epoch(data[4]) or now(), data[5])


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
