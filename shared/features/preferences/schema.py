"""The preference tables, lookups and views `provision` creates (in the product's solution)."""

from __future__ import annotations

from shared.adapters import schema
from shared.adapters.ports import DataversePort
from shared.features.preferences.catalog import NAME_LENGTH, Names
from shared.rules.preferences import CHANGED_BY, VISIBILITY

# ---- schema --------------------------------------------------------------------------------------


def provision_schema(dataverse: DataversePort, prefix: str) -> list[str]:
    """The preference and subscription tables, their columns, lookups and views; a line per thing created."""

    p = prefix
    names = Names(p)
    done: list[str] = []
    tables = [
        (
            schema.table_metadata(
                f"{p}_MarketingPreference",
                "Marketing Preference",
                "Marketing Preferences",
                f"{p}_Name",
                "Name",
                "An interest of a linked Mailchimp audience (mirrored from Mailchimp, which is its master)",
            ),
            [
                schema.string_column(f"{p}_Category", "Category", NAME_LENGTH),
                schema.choice_column(
                    f"{p}_Visibility", "Visibility", {VISIBILITY["public"]: "Public", VISIBILITY["private"]: "Private"}
                ),
                schema.string_column(f"{p}_AudienceId", "Mailchimp Audience Id", 50),
                schema.string_column(f"{p}_InterestCategoryId", "Interest Category Id", 50),
                schema.string_column(f"{p}_InterestId", "Interest Id", 50),
                schema.boolean_column(f"{p}_Active", "Active"),
            ],
        ),
        (
            schema.table_metadata(
                f"{p}_PreferenceSubscription",
                "Preference Subscription",
                "Preference Subscriptions",
                f"{p}_Name",
                "Name",
                "Whether one contact, lead or account chose one marketing preference, kept in step with Mailchimp",
            ),
            [
                schema.boolean_column(f"{p}_OptedIn", "Opted In"),
                schema.choice_column(
                    f"{p}_ChangedBy",
                    "Changed By",
                    {CHANGED_BY["mailchimp"]: "Mailchimp", CHANGED_BY["dynamics"]: "Dynamics"},
                ),
                schema.datetime_column(f"{p}_ChangedOn", "Changed On"),
            ],
        ),
    ]
    done += schema.ensure_tables(dataverse, tables)
    subscription = names.subscription_table
    lookups = [
        (
            names.preference_table,
            names.navigation("preference"),
            "Preference",
            f"{p}_{names.preference_table}_{subscription}",
            "Restrict",
        )
    ]
    # a person's subscriptions go with the person (erasure requests too)
    lookups += [
        (kind, names.navigation(kind), kind.title(), f"{p}_{kind}_{subscription}", "Cascade")
        for kind in ("contact", "lead", "account")
    ]
    for referenced, lookup, display, relationship, delete in lookups:
        if schema.ensure_lookup(dataverse, subscription, referenced, lookup, display, relationship, delete=delete):
            done.append(f"created lookup {lookup.lower()} on {subscription}")
    created = [
        name for name, fetch, layout in views(names) if schema.ensure_view(dataverse, subscription, name, fetch, layout)
    ]
    if created:
        dataverse.publish([subscription])
        done += [f"created view '{name}' on {subscription}" for name in created]
    return done


def views(names: Names) -> list[tuple[str, str, str]]:
    """(name, FetchXML, layout XML) of the saved views on preference subscriptions."""
    c = names.column
    subscription, preference = names.subscription_table, names.preference_table
    shown = [
        c("name"),
        c("contact"),
        c("lead"),
        c("account"),
        c("preference"),
        c("optedin"),
        c("changedby"),
        c("changedon"),
    ]

    def fetch(condition: str, on_preference: bool = False) -> str:
        columns = [f"{subscription}id", *shown]
        if not on_preference:
            return schema.view_fetch(subscription, columns, newest_first=c("changedon"), conditions=condition)
        linked = (
            f'<link-entity name="{preference}" from="{preference}id" to="{c("preference")}" '
            f'link-type="inner" alias="preference"><filter type="and">{condition}</filter></link-entity>'
        )
        return schema.view_fetch(subscription, columns, newest_first=c("changedon"), linked=linked)

    layout = schema.view_layout(subscription, shown)
    opted_in = f'<condition attribute="{c("optedin")}" operator="eq" value="1"/>'
    opted_out = f'<condition attribute="{c("optedin")}" operator="eq" value="0"/>'
    private = f'<condition attribute="{c("visibility")}" operator="eq" value="{VISIBILITY["private"]}"/>'
    public = f'<condition attribute="{c("visibility")}" operator="eq" value="{VISIBILITY["public"]}"/>'
    return [
        ("Preference subscriptions: opted in", fetch(opted_in), layout),
        ("Preference subscriptions: opted out", fetch(opted_out), layout),
        ("Preference subscriptions: private preferences", fetch(private, on_preference=True), layout),
        ("Preference subscriptions: public preferences", fetch(public, on_preference=True), layout),
    ]
