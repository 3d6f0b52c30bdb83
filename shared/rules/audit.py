"""Audit entries: what one decision did (or refused to do) to one person, before it becomes a ConsentAudit row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# decisions audited even when they write nothing: a refusal to act is part of the consent history
AUDITED_WITHOUT_WRITES = frozenset(
    {"not-added-opted-out", "member-archived-not-revived", "resubscribe-blocked", "no-syncable-record"}
)


@dataclass
class AuditEntry:
    """One person's outcome under one rule, for the audit and for --dry-run."""

    member_hash: str
    rule: str
    record_ids: list[str]
    mailchimp_old: str | None = None
    mailchimp_new: str | None = None
    dynamics_old: str | None = None
    dynamics_new: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    detail: str = ""
    member_last_changed: datetime | None = None
    records_modifiedon: datetime | None = None
    repeated: bool = False  # the same refusal as last time, on unchanged input: already in the audit
    feature: str = ""  # "" for a consent change; else the feature whose change it is (counted apart)

    @property
    def side(self) -> str:
        sides = [
            name
            for name, new in (("mailchimp", self.mailchimp_new), ("dynamics", self.dynamics_new))
            if new is not None
        ]
        return "both" if len(sides) == 2 else (sides[0] if sides else "none")

    @property
    def worth_keeping(self) -> bool:
        """Whether the entry belongs in the audit: it wrote, refused, skipped or explains something new."""
        if self.side != "none":
            return True
        return not self.repeated and bool(self.skipped or self.detail or self.rule in AUDITED_WITHOUT_WRITES)
