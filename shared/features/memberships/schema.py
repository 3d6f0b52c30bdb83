"""The membership and consent history tables `provision` creates (in the product's solution), their lookups to
contact, lead and account (cascade delete: the rows go with the person) and their saved views."""

from __future__ import annotations

from dataclasses import dataclass

from shared.adapters import schema
from shared.adapters.ports import DataversePort
from shared.rules.consent import SUBSCRIBER_STATUS_CODES
from shared.rules.memberships import SIDE_LABELS, SOURCE_LABELS

KINDS = ("contact", "lead", "account")
NAME_LENGTH = 200
TEXT_LENGTH = 400
STATUS_LABELS = {code: status.title() for status, code in SUBSCRIBER_STATUS_CODES.items()}
VIEW_BY_AUDIENCE = "Audience memberships by audience"
VIEW_UNSUBSCRIBED = "Audience memberships: unsubscribed"
VIEW_HISTORY = "Consent history, newest first"


@dataclass(frozen=True)
class Names(schema.PrefixedNames):
    """The tables' names under a publisher prefix (``cbr`` by default)."""

    @property
    def membership_table(self) -> str:
        return f"{self.prefix}_audiencemembership"

    @property
    def membership_set(self) -> str:
        return f"{self.prefix}_audiencememberships"

    @property
    def change_table(self) -> str:
        return f"{self.prefix}_consentchange"

    @property
    def change_set(self) -> str:
        return f"{self.prefix}_consentchanges"


def provision_schema(dataverse: DataversePort, prefix: str) -> list[str]:
    """Both tables, their columns, lookups and views; a line per thing created."""
    p = prefix
    names = Names(p)
    owned = "Written by Consent Bridge"
    tables = [
        (
            schema.table_metadata(
                f"{p}_AudienceMembership",
                "Audience Membership",
                "Audience Memberships",
                f"{p}_Name",
                "Name",
                "A contact, lead or account in one linked Mailchimp audience: its status there, when and why it "
                "changed. Set Status to Unsubscribed to opt the person out of this audience only",
                primary_name_length=NAME_LENGTH,
            ),
            [
                schema.string_column(f"{p}_AudienceId", "Mailchimp Audience Id", 64, description=owned),
                schema.string_column(f"{p}_AudienceName", "Audience", 100, description=owned),
                schema.choice_column(
                    f"{p}_Status",
                    "Status",
                    STATUS_LABELS,
                    description="The person's status in this audience; a user may set it to Unsubscribed",
                ),
                schema.datetime_column(f"{p}_StatusChangedOn", "Status Changed On", description=owned),
                schema.choice_column(f"{p}_Source", "Changed By", SOURCE_LABELS, description=owned),
                schema.string_column(f"{p}_Reason", "Reason", TEXT_LENGTH, description=owned),
            ],
        ),
        (
            schema.table_metadata(
                f"{p}_ConsentChange",
                "Consent Change",
                "Consent Changes",
                f"{p}_Name",
                "Name",
                "One consent change Consent Bridge wrote to Mailchimp or Dynamics for this person, with the rule "
                "that decided it (the complete log is the ConsentAudit table)",
                primary_name_length=NAME_LENGTH,
            ),
            [
                schema.string_column(f"{p}_AudienceId", "Mailchimp Audience Id", 64, description=owned),
                schema.string_column(f"{p}_Rule", "Rule", 100, description=owned),
                schema.choice_column(f"{p}_Side", "Side Written", SIDE_LABELS, description=owned),
                schema.string_column(f"{p}_OldValue", "Old Value", TEXT_LENGTH, description=owned),
                schema.string_column(f"{p}_NewValue", "New Value", TEXT_LENGTH, description=owned),
                schema.string_column(f"{p}_Cause", "Cause", TEXT_LENGTH, description=owned),
                schema.datetime_column(f"{p}_OccurredOn", "Occurred On", description=owned),
                schema.string_column(f"{p}_RunId", "Run Id", 100, description=owned),
            ],
        ),
    ]
    done = schema.ensure_tables(dataverse, tables)
    for table in (names.membership_table, names.change_table):
        # the rows belong to the person: they go when the record goes (an erasure included), and show on its
        # related tab under the table's name
        for kind in KINDS:
            relationship = f"{p}_{kind}_{table}"
            if schema.ensure_lookup(
                dataverse, table, kind, names.navigation(kind), kind.title(), relationship, delete="Cascade"
            ):
                done.append(f"created lookup {names.navigation(kind).lower()} on {table}")
    created: list[str] = []
    for table, name, fetch, layout in views(names):
        if schema.ensure_view(dataverse, table, name, fetch, layout):
            created.append(table)
            done.append(f"created view '{name}' on {table}")
    if created:
        dataverse.publish(sorted(set(created)))
    return done


def views(names: Names) -> list[tuple[str, str, str, str]]:
    """(table, name, FetchXML, layout XML) of the saved views."""
    c = names.column
    membership, change = names.membership_table, names.change_table
    member_shown = [c("name"), c("audiencename"), c("status"), c("statuschangedon"), c("source"), c("reason")]
    change_shown = [
        c("name"),
        c("occurredon"),
        c("side"),
        c("rule"),
        c("oldvalue"),
        c("newvalue"),
        c("cause"),
        c("audienceid"),
    ]
    unsubscribed = (
        f'<condition attribute="{c("status")}" operator="eq" value="{SUBSCRIBER_STATUS_CODES["unsubscribed"]}"/>'
    )
    attributes = "".join(f'<attribute name="{column}"/>' for column in [f"{membership}id", *member_shown])
    by_audience = (  # grouped by audience, then newest first
        f'<fetch version="1.0" mapping="logical"><entity name="{membership}">{attributes}'
        f'<order attribute="{c("audiencename")}" descending="false"/>'
        f'<order attribute="{c("statuschangedon")}" descending="true"/></entity></fetch>'
    )
    return [
        (membership, VIEW_BY_AUDIENCE, by_audience, schema.view_layout(membership, member_shown)),
        (
            membership,
            VIEW_UNSUBSCRIBED,
            schema.view_fetch(
                membership,
                [f"{membership}id", *member_shown],
                newest_first=c("statuschangedon"),
                conditions=unsubscribed,
            ),
            schema.view_layout(membership, member_shown),
        ),
        (
            change,
            VIEW_HISTORY,
            schema.view_fetch(change, [f"{change}id", *change_shown], newest_first=c("occurredon")),
            schema.view_layout(change, change_shown),
        ),
    ]
