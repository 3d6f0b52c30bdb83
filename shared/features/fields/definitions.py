"""The audience's merge fields as the conversions need them, kept per link in SyncState: read from Mailchimp on
a full pass or when none are kept, so a run with nothing changed makes no call for them."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

from shared.adapters.ports import MailchimpPort, StoragePort
from shared.adapters.storage import SYNC_STATE, upsert
from shared.rules.fields import MergeDefinition

DEFINITIONS_ROW = "merge-fields"  # SyncState row of a link that holds its audience's merge fields

Definitions = dict[str, MergeDefinition]


def read_definitions(mailchimp: MailchimpPort, audience_id: str, counts: Counter[str] | None = None) -> Definitions:
    found = {str(item["tag"]): MergeDefinition.of(item) for item in mailchimp.merge_fields(audience_id)}
    if counts is not None:
        counts["merge_field_reads"] += 1
        counts["fields_calls_mailchimp"] += 1
    return found


def load_definitions(storage: StoragePort, link: str) -> Definitions | None:
    row = storage.get(SYNC_STATE, link, DEFINITIONS_ROW)
    if row is None:
        return None
    return {str(data[0]): MergeDefinition.decode(data) for data in json.loads(row.get("fields") or "[]")}


def save_definitions(storage: StoragePort, link: str, definitions: Definitions) -> None:
    encoded = json.dumps([d.encode() for d in definitions.values()], separators=(",", ":"))
    storage.write(
        SYNC_STATE,
        [
            upsert(
                {
                    "PartitionKey": link,
                    "RowKey": DEFINITIONS_ROW,
                    "fields": encoded,
                    "refreshed": datetime.now(UTC).isoformat(),
                }
            )
        ],
    )
