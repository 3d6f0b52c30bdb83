"""The fields feature's part in a scan: the merge fields ride in the member pages already read (``fields``), the
mapped columns in the records' $select already made; the audience's merge field types are refreshed for the run."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from shared.adapters.ports import MailchimpPort, StoragePort
from shared.features.fields.definitions import load_definitions, read_definitions, save_definitions
from shared.rules import fields
from shared.settings import FieldMapping, Link

log = logging.getLogger("consent_bridge.fields")

MEMBER_FIELD = "members.merge_fields"


class MappedFields:
    """Answers the scan's questions about mapped fields for every link (shared.sync.scan.FieldSource)."""

    def __init__(self, field_map: tuple[FieldMapping, ...], mailchimp: MailchimpPort, storage: StoragePort) -> None:
        self.field_map = field_map
        self.mailchimp = mailchimp
        self.storage = storage

    def reading(self, link: Link, *, dry_run: bool) -> FieldsReading:
        return FieldsReading(self, link, dry_run)


class FieldsReading:
    """One scan's view of the mapped fields."""

    def __init__(self, source: MappedFields, link: Link, dry_run: bool) -> None:
        self.source = source
        self.link = link
        self.dry_run = dry_run
        self.tags = sorted({m.merge_field for m in source.field_map})

    def member_fields(self) -> list[str]:
        return [MEMBER_FIELD] if self.tags else []

    def columns(self, kind: str) -> list[str]:
        return [c for m in fields.for_kind(self.source.field_map, kind) for c in fields.columns_read(m.column)]

    def member_values(self, member: dict[str, Any]) -> dict[str, Any] | None:
        if not self.tags:
            return None
        merge = member.get("merge_fields") or {}
        return {tag: merge.get(tag, "") for tag in self.tags}

    def record_values(self, row: dict[str, Any], kind: str) -> dict[str, Any] | None:
        mapped = fields.for_kind(self.source.field_map, kind)
        if not mapped:
            return None
        return {m.column: fields.record_value(m.column, row) for m in mapped}

    def prepare(self, *, full: bool, counts: Counter[str]) -> None:
        """The audience's merge field types for the run's reconcile: read on a full pass or when none are kept."""
        if not self.tags:
            return
        storage = self.source.storage
        if not full and load_definitions(storage, self.link.name) is not None:
            return
        definitions = read_definitions(self.source.mailchimp, self.link.audience_id, counts)
        missing = [tag for tag in self.tags if tag not in definitions]
        if missing:
            log.warning(
                "link %s: audience %s has no merge field %s; those mappings are left alone until "
                "`python -m shared.cli provision` creates them",
                self.link.name,
                self.link.audience_id,
                ", ".join(missing),
            )
        if not self.dry_run:
            save_definitions(storage, self.link.name, definitions)
