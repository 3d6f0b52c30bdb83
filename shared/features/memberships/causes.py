"""The campaign behind a status change, when another feature learns it after the membership rows were written.

A scheduled run writes a membership row when it applies the member's unsubscribe or bounce; the campaign whose
footer or bounce caused it is read later in the same run, by the campaign activity's pass over the campaign's
report (``/reports/{id}/unsubscribed``, hard bounces in its activity). That pass tells every step
(``Step.causes_found``); here the rows of those members that say unsubscribed or cleaned get the campaign put in
front of their reason: one read of the rows (per thousand) and one ``$batch`` per pass that found causes. A row
that does not say opted out (the status change is not applied yet) is left as it is: the change's own row,
written later, has Mailchimp's reason, and the campaign stays in ConsentAudit's detail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shared.adapters.dataverse import BatchOperation
from shared.adapters.ports import DataversePort, StoragePort
from shared.features.memberships.schema import TEXT_LENGTH, Names
from shared.rules.consent import SUBSCRIBER_STATUS_CODES
from shared.settings import Link
from shared.state.identity import IdentityMap

log = logging.getLogger("consent_bridge.memberships")

ROWS_PER_READ = 1000  # row ids per FetchXML read (the adapter sends a long one inside $batch)
OPTED_OUT_CODES = frozenset(SUBSCRIBER_STATUS_CODES[s] for s in ("unsubscribed", "cleaned"))


class CampaignCauses:
    def __init__(self, dataverse: DataversePort, storage: StoragePort, names: Names) -> None:
        self.dataverse = dataverse
        self.storage = storage
        self.names = names

    def apply(self, link: Link, causes: dict[str, str], row_id: Callable[[str, str], str]) -> int:
        """Puts each cause in front of the reason of its member's opted-out rows in the link's audience; returns
        how many rows were written. ``row_id(record_id, audience_id)`` names a membership row."""
        bases = IdentityMap(self.storage).load(link.name, sorted(causes))
        wanted = {
            row_id(record_id, link.audience_id): causes[member]
            for member, base in bases.items()
            for record_id, _ in base.records
        }
        if not wanted:
            return 0
        c = self.names.column
        table = self.names.membership_table
        key = f"{table}id"
        ids = sorted(wanted)
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), ROWS_PER_READ):
            values = "".join(f"<value>{row}</value>" for row in ids[start : start + ROWS_PER_READ])
            fetch = (
                f'<fetch><entity name="{table}"><attribute name="{key}"/><attribute name="{c("status")}"/>'
                f'<attribute name="{c("reason")}"/><filter><condition attribute="{key}" operator="in">{values}'
                "</condition></filter></entity></fetch>"
            )
            for page in self.dataverse.iter_fetchxml(self.names.membership_set, fetch):
                rows.extend(page)
        writes = []
        for row in rows:
            text, reason = wanted.get(str(row.get(key) or "").lower()), str(row.get(c("reason")) or "")
            if text is None or row.get(c("status")) not in OPTED_OUT_CODES or text in reason:
                continue
            writes.append(
                BatchOperation(
                    "PATCH",
                    f"{self.names.membership_set}({row[key]})",
                    {c("reason"): f"{text}; {reason}"[:TEXT_LENGTH] if reason else text[:TEXT_LENGTH]},
                    {"If-Match": "*"},
                )
            )
        if not writes:
            return 0
        refused = sum(1 for result in self.dataverse.batch(writes) if result.status >= 400)
        if refused:
            log.warning("%d of %d membership rows did not take their campaign cause", refused, len(writes))
        return len(writes) - refused
