"""The ConsentAudit table: one row per change written to either side (or refused), named by member hash.

Row properties are a contract other tools read (design.md, "Storage names"). Keys: a link's day is one
partition; row keys ``run|member hash|n`` depend on the member, not on how batches were grouped, so a
unit decided twice writes the same rows again rather than new ones.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

from shared.adapters.ports import StoragePort
from shared.adapters.storage import CONSENT_AUDIT, upsert
from shared.model.times import iso, now
from shared.rules.audit import AuditEntry


class AuditLog:
    def __init__(self, storage: StoragePort) -> None:
        self.storage = storage

    def write(self, link: str, run_id: str, entries: list[AuditEntry], *, when: datetime | None = None) -> int:
        """Writes one row per entry; returns the storage calls it took."""
        if not entries:
            return 0
        when = when or now()
        seen: Counter[str] = Counter()
        rows = []
        for entry in entries:
            seen[entry.member_hash] += 1
            rows.append(
                upsert(
                    {
                        "PartitionKey": f"{link}|{when:%Y%m%d}",
                        "RowKey": f"{run_id}|{entry.member_hash or '-'}|{seen[entry.member_hash]}",
                        "when": when,
                        "link": link,
                        "run_id": run_id,
                        "member_hash": entry.member_hash,
                        "record_ids": json.dumps(entry.record_ids),
                        "side": entry.side,
                        "rule": entry.rule,
                        "mailchimp_old": entry.mailchimp_old or "",
                        "mailchimp_new": entry.mailchimp_new or "",
                        "dynamics_old": entry.dynamics_old or "",
                        "dynamics_new": entry.dynamics_new or "",
                        "skipped": json.dumps(entry.skipped) if entry.skipped else "",
                        "detail": entry.detail,
                        "member_last_changed": iso(entry.member_last_changed),
                        "records_modifiedon": iso(entry.records_modifiedon),
                    }
                )
            )
        return self.storage.write(CONSENT_AUDIT, rows)

    def write_skips(self, link: str, run_id: str, skips: list[tuple[str, str]], when: datetime) -> None:
        """Records the scan could not use (no usable address): one row per record, reason and day, so a
        record re-read by later runs of the day is not audited again."""
        rows = [
            upsert(
                {
                    "PartitionKey": f"{link}|{when:%Y%m%d}",
                    "RowKey": f"skip|{record_id}|{reason}",
                    "when": when,
                    "link": link,
                    "run_id": run_id,
                    "member_hash": "",
                    "record_ids": json.dumps([record_id]),
                    "side": "none",
                    "rule": "skipped",
                    "skipped": json.dumps([[record_id, reason]]),
                    "detail": f"record {record_id} has no usable email address ({reason})",
                }
            )
            for record_id, reason in skips
        ]
        self.storage.write(CONSENT_AUDIT, rows)
