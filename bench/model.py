"""The efficiency model of design.md: the fewest API calls a run's work could take, and the targets."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import ceil
from typing import Any

MAILCHIMP_READ_PAGE = 1000  # members per GET /lists/{id}/members
MAILCHIMP_WRITE_PAGE = 500  # members per batch subscribe
DATAVERSE_READ_PAGE = 5000  # records per page with Prefer: odata.maxpagesize=5000
DATAVERSE_WRITE_PAGE = 1000  # requests per $batch

TARGETS = {
    "no_change_calls_per_link": 6,
    "ratio_max": 1.25,
    "initial_seconds": 60.0,
    "initial_seconds_at_records": 50_000,
    "peak_rss_mb": 300.0,
    "rss_growth_percent": 25.0,
}

HOW_N_IS_DERIVED = (
    "n per kind of work, for each run. Reads: what the run had to read, counted on the services just before it "
    "started: members whose last_changed is after the previous run's start (GET members with "
    "since_last_changed, total_items) and records of the list whose modifiedon is at or after it (a paged "
    "$select=contactid read), each by the service's own clock; for the initial run, the whole audience and the "
    "whole list. This includes the echoes of the previous run's own writes, which any watermark-based read must "
    "see again. Writes: members written = the run's mailchimp_writes counter (members whose status the run "
    "changed in Mailchimp, one ConsentAudit row with a Mailchimp side each); records written = PATCH requests "
    "executed inside $batch (the Dataverse emulator's /_admin/batch-parts, before and after the run) and "
    "records updated by UpdateMultiple (its /_admin/bulk-targets), one bulk message counting as one call. "
    "Minimum = ceil(members to read / 1,000) (at least 1) + ceil(members written / 500) + 1 (the marketing "
    "list's definition) + ceil(records to read / 5,000) (at least 1) + 1 for the new memberships of a static "
    "list in an incremental run + ceil(records written / 1,000); the list definition and the memberships call "
    "belong to the minimum of a correct design, which cannot otherwise know what the list is or who joined it. "
    "Marketing preferences add: ceil(preference rows to read / 5,000) (at least 1 while the audience has interests; "
    "rows whose modifiedon is at or after the previous run's start, counted on Dataverse before the run); on a run "
    "that reads the interest catalog (the initial run, a full pass, or an interest the catalog does not know), "
    "1 + categories Mailchimp calls, 1 read of the preference rows and ceil(preference rows written / 1,000); "
    "members written count members whose interests alone were sent too, and records written count the "
    "subscription rows upserted in the same $batch (so they share its pages). "
    "Audience memberships and consent history add no call of their own: their rows are upserts in the run's "
    "$batch (records written count them, so they share its pages); the calls they add are "
    "ceil(records written / 1,000) - ceil((records written - their rows) / 1,000), and a full pass after the "
    "initial run adds 1 read of the membership rows users edited since the previous one. "
    "A full pass (the initial run included) adds ceil(archived members / 1,000) (at least 1): the audience's "
    "archived members, listed only when asked for, so that no record brings one back. "
    "Mapped fields (FIELD_MAP) add 1 read of the audience's merge fields on a run that reads them (the initial run "
    "or a full pass); members written count members whose merge fields alone were sent (the sync's "
    "members_written_by_steps counter, which counts a member once however many features added to its entry), and "
    "records written count PATCHes that carry mapped columns alone. "
    "The link's status row in Dynamics adds 1 write per run (a $batch of its own; a run with batches to "
    "reconcile writes it twice, Running after the scan and its outcome at the end); its PATCHes are not "
    "records written. "
    "'Minimum as read' and 'ratio read' use instead the members and records the run actually read (its mailchimp_read "
    "and dataverse_read counters): that ratio shows how well the calls were packed, the difference between the "
    "two shows reads that were not needed (overlap re-reads)."
)


@dataclass
class Work:
    """What one run read and wrote, per kind."""

    members_read: int
    members_written: int
    records_read: int
    records_written: int
    static_incremental: bool  # a static list read incrementally also asks for its new memberships
    preference_rows_read: int = 0
    interests: bool = False  # the audience has interests: its changed preference rows are read
    catalog_categories: int | None = None  # categories of a catalog the run read (None: it did not read one)
    catalog_written: int = 0  # preference (catalog) rows the run created, renamed or deactivated
    preference_rows_written: int = 0  # subscription rows among records_written
    preference_members_written: int = 0  # members among members_written whose interests alone were sent
    status_writes: int = 0  # $batch calls that wrote the link's status row in Dynamics (not counted as records)
    merge_field_reads: int = 0  # reads of the audience's merge fields (mapped fields; the initial run, full passes)
    membership_rows_written: int = 0  # audience membership rows among records_written
    history_rows_written: int = 0  # consent history rows among records_written
    scoped_read: bool = False  # a full pass after the initial run reads the membership rows users edited
    archived_read: int | None = None  # archived members a full pass listed (None: it did not list them)


@dataclass
class Minimum:
    mailchimp_read: int
    mailchimp_write: int
    dataverse_list: int
    dataverse_read: int
    dataverse_memberships: int
    dataverse_write: int
    mailchimp_catalog: int = 0
    dataverse_catalog: int = 0
    dataverse_preferences: int = 0
    preference_writes: int = 0  # the $batch calls among dataverse_write that the subscription rows add
    preference_member_writes: int = 0  # the batch subscribes among mailchimp_write that interests alone add
    dataverse_status: int = 1  # the link's status row in Dynamics: one write per run
    membership_writes: int = 0  # the $batch calls among dataverse_write that membership and history rows add
    dataverse_scoped: int = 0  # a full pass's read of the membership rows users edited
    mailchimp_merge_fields: int = 0  # the audience's merge field definitions, on a run that reads them
    mailchimp_archived: int = 0  # a full pass's read of the audience's archived members

    @property
    def mailchimp(self) -> int:
        return (
            self.mailchimp_read
            + self.mailchimp_write
            + self.mailchimp_catalog
            + self.mailchimp_merge_fields
            + self.mailchimp_archived
        )

    @property
    def dataverse(self) -> int:
        return (
            self.dataverse_list
            + self.dataverse_read
            + self.dataverse_memberships
            + self.dataverse_write
            + self.dataverse_catalog
            + self.dataverse_preferences
            + self.dataverse_status
            + self.dataverse_scoped
        )

    @property
    def preferences(self) -> int:
        """The calls the preference part needs beyond the status sync's."""
        return (
            self.mailchimp_catalog
            + self.dataverse_catalog
            + self.dataverse_preferences
            + self.preference_writes
            + self.preference_member_writes
        )

    @property
    def memberships(self) -> int:
        """The calls the memberships part needs beyond the status sync's."""
        return self.membership_writes + self.dataverse_scoped

    @property
    def total(self) -> int:
        return self.mailchimp + self.dataverse

    def to_json(self) -> dict[str, int]:
        return {
            **asdict(self),
            "mailchimp": self.mailchimp,
            "dataverse": self.dataverse,
            "preferences": self.preferences,
            "memberships": self.memberships,
            "total": self.total,
        }


def minimum(work: Work) -> Minimum:
    write = ceil(work.records_written / DATAVERSE_WRITE_PAGE)
    catalog = work.catalog_categories is not None
    membership_rows = work.membership_rows_written + work.history_rows_written
    return Minimum(
        mailchimp_read=max(1, ceil(work.members_read / MAILCHIMP_READ_PAGE)),
        mailchimp_write=ceil(work.members_written / MAILCHIMP_WRITE_PAGE),
        dataverse_list=1,
        dataverse_read=max(1, ceil(work.records_read / DATAVERSE_READ_PAGE)),
        dataverse_memberships=1 if work.static_incremental else 0,
        dataverse_write=write,
        mailchimp_catalog=1 + (work.catalog_categories or 0) if catalog else 0,
        dataverse_catalog=1 + ceil(work.catalog_written / DATAVERSE_WRITE_PAGE) if catalog else 0,
        dataverse_preferences=max(1, ceil(work.preference_rows_read / DATAVERSE_READ_PAGE)) if work.interests else 0,
        preference_writes=write - ceil((work.records_written - work.preference_rows_written) / DATAVERSE_WRITE_PAGE),
        preference_member_writes=ceil(work.members_written / MAILCHIMP_WRITE_PAGE)
        - ceil((work.members_written - work.preference_members_written) / MAILCHIMP_WRITE_PAGE),
        membership_writes=write - ceil((work.records_written - membership_rows) / DATAVERSE_WRITE_PAGE),
        dataverse_scoped=int(work.scoped_read),
        mailchimp_merge_fields=min(1, work.merge_field_reads),
        mailchimp_archived=0 if work.archived_read is None else max(1, ceil(work.archived_read / MAILCHIMP_READ_PAGE)),
    )


def explain(work: Work, low: Minimum) -> str:
    """One line: how the minimum of this run adds up."""

    def part(n: int, page: int, calls: int) -> str:
        return f"⌈{n:,}/{page:,}⌉={calls}"

    text = (
        f"Mailchimp read {part(work.members_read, MAILCHIMP_READ_PAGE, low.mailchimp_read)}"
        f" + write {part(work.members_written, MAILCHIMP_WRITE_PAGE, low.mailchimp_write)}"
        f"; Dataverse list 1 + read {part(work.records_read, DATAVERSE_READ_PAGE, low.dataverse_read)}"
    )
    if low.dataverse_memberships:
        text += " + memberships 1"
    text += f" + write {part(work.records_written, DATAVERSE_WRITE_PAGE, low.dataverse_write)}"
    if low.dataverse_preferences:
        text += f" + preference rows {part(work.preference_rows_read, DATAVERSE_READ_PAGE, low.dataverse_preferences)}"
    if work.membership_rows_written or work.history_rows_written:
        text += (
            f" (of which {work.membership_rows_written:,} membership and {work.history_rows_written:,} consent "
            f"history rows: {low.membership_writes} call(s) of their own)"
        )
    if low.dataverse_scoped:
        text += " + membership edits 1"
    text += " + status row 1"
    if low.mailchimp_merge_fields:
        text += "; merge fields 1"
    if work.archived_read is not None:
        text += f"; archived members {part(work.archived_read, MAILCHIMP_READ_PAGE, low.mailchimp_archived)}"
    if low.mailchimp_catalog:
        text += (
            f"; catalog: Mailchimp 1 + {work.catalog_categories} categories, Dataverse read 1 + write "
            f"{part(work.catalog_written, DATAVERSE_WRITE_PAGE, low.dataverse_catalog - 1)}"
        )
    return f"{text} = {low.total}"


def checks(run: dict[str, Any], records: int) -> list[dict[str, Any]]:
    """The targets that apply to one measured run, each with whether the run met it (reported, not asserted)."""
    found = []
    if run["run"] in ("initial", "incremental"):
        found.append(
            {"target": f"calls <= {TARGETS['ratio_max']:g} x minimum", "met": run["ratio"] <= TARGETS["ratio_max"]}
        )
    part = run.get("preferences") or {}
    if part.get("ratio") is not None and run["run"] in ("initial", "incremental"):
        found.append(
            {
                "target": f"preference calls <= {TARGETS['ratio_max']:g} x their minimum",
                "met": part["ratio"] <= TARGETS["ratio_max"],
            }
        )
    if run["run"] in ("no-change", "idle"):
        limit = TARGETS["no_change_calls_per_link"]
        calls = run["api_calls"]["total"] - run["work"].get("status_writes", 0)
        found.append({"target": f"<= {limit} API calls per link plus the status write", "met": calls <= limit})
    if run["run"] == "initial" and records == TARGETS["initial_seconds_at_records"]:
        found.append(
            {
                "target": f"<= {TARGETS['initial_seconds']:g} s at {records:,} records",
                "met": run["wall_seconds"] <= TARGETS["initial_seconds"],
            }
        )
    found.append(
        {"target": f"peak RSS <= {TARGETS['peak_rss_mb']:g} MB", "met": run["peak_rss_mb"] <= TARGETS["peak_rss_mb"]}
    )
    return found
