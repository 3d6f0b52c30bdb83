"""The sync link table `provision` creates: one row per link, kept by the product, and its "Sync links" view."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from shared.adapters import schema
from shared.adapters.ports import DataversePort

# cbr_lastoutcome (contract)
SUCCEEDED, PARTIAL, FAILED, RUNNING, SKIPPED = 100000000, 100000001, 100000002, 100000003, 100000004
OUTCOME_LABELS = {SUCCEEDED: "Succeeded", PARTIAL: "Partial", FAILED: "Failed", RUNNING: "Running", SKIPPED: "Skipped"}
VIEW_NAME = "Sync links"
SUMMARY_LENGTH = 2000
ROW_NAMESPACE = uuid.UUID("5d0c3c52-6a53-4b7e-9a43-6f3e2b1c9d17")  # a link's row id derives from its name


@dataclass(frozen=True)
class Names:
    """The table's names under a publisher prefix (``cbr`` by default)."""

    prefix: str

    @property
    def table(self) -> str:
        return f"{self.prefix}_synclink"

    @property
    def entity_set(self) -> str:
        return f"{self.prefix}_synclinks"

    def column(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    @property
    def sync_now(self) -> str:
        return self.column("syncnow")


def row_id(link: str) -> str:
    """The link's row: the same id in every environment and after every provision, so writes can upsert it."""
    return str(uuid.uuid5(ROW_NAMESPACE, f"synclink|{link}"))


def provision_schema(dataverse: DataversePort, prefix: str) -> list[str]:
    """The sync link table, its columns and its view; a line per thing created."""
    p = prefix
    names = Names(p)
    owned = "Written by Consent Bridge; an edit is written back by the next run (and audited)."
    table = (
        schema.table_metadata(
            f"{p}_SyncLink",
            "Sync Link",
            "Sync Links",
            f"{p}_Name",
            "Name",
            "One Consent Bridge link (a marketing list and a Mailchimp audience): its last run, next run and "
            "'Sync now'",
            primary_name_length=100,
        ),
        [
            schema.string_column(f"{p}_MarketingListId", "Marketing List Id", 100, description=owned),
            schema.string_column(f"{p}_AudienceId", "Mailchimp Audience Id", 64, description=owned),
            schema.datetime_column(f"{p}_LastStarted", "Last Started", description=owned),
            schema.datetime_column(f"{p}_LastFinished", "Last Finished", description=owned),
            schema.choice_column(f"{p}_LastOutcome", "Last Outcome", OUTCOME_LABELS, description=owned),
            schema.memo_column(f"{p}_LastSummary", "Last Summary", SUMMARY_LENGTH, description=owned),
            schema.memo_column(f"{p}_LastError", "Last Error", SUMMARY_LENGTH, description=owned),
            schema.datetime_column(f"{p}_NextRun", "Next Run", description=owned),
            schema.string_column(
                f"{p}_LastEvent", "Last Event", 400, description="The last real-time event applied (Consent Bridge)"
            ),
            schema.boolean_column(
                f"{p}_SyncNow",
                "Sync Now",
                description="Set to Yes to start a run of this link within a minute; Consent Bridge sets it back to No",
            ),
        ],
    )
    done = schema.ensure_tables(dataverse, [table])
    shown = [names.column(c) for c in ("name", "lastoutcome", "lastfinished", "nextrun", "lasterror")]
    fetch = schema.view_fetch(names.table, [f"{names.table}id", *shown], newest_first=names.column("lastfinished"))
    if schema.ensure_view(dataverse, names.table, VIEW_NAME, fetch, schema.view_layout(names.table, shown)):
        dataverse.publish([names.table])
        done.append(f"created view '{VIEW_NAME}' on {names.table}")
    return done
