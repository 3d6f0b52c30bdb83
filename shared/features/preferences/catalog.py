"""The interest catalog and the preference subscription rows in Dataverse: reading, mirroring, writing.

Mailchimp is the catalog's master (see shared/rules/preferences.py for the rule per pair)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.adapters.dataverse import BATCH_LIMIT, BatchOperation
from shared.adapters.ports import DataversePort, MailchimpPort, StoragePort
from shared.adapters.schema import PrefixedNames
from shared.adapters.storage import SYNC_STATE, upsert
from shared.errors import LinkError
from shared.model.kinds import KIND_SETS
from shared.model.snapshots import PreferenceRow
from shared.model.times import iso_seconds, parse_time
from shared.rules.preferences import CHANGED_BY, VISIBILITY, RowWrite, preference_id, subscription_id

CATALOG_ROW = "catalog"  # SyncState row of a link that holds its audience's interest catalog
HIDDEN = "hidden"  # the interest category type Mailchimp does not show on forms: private preferences
NAME_LENGTH = 200


@dataclass(frozen=True)
class Names(PrefixedNames):
    """Table, column and lookup names under the publisher prefix (DATAVERSE_PREFIX)."""

    @property
    def preference_table(self) -> str:
        return f"{self.prefix}_marketingpreference"

    @property
    def preference_set(self) -> str:
        return f"{self.prefix}_marketingpreferences"

    @property
    def subscription_table(self) -> str:
        return f"{self.prefix}_preferencesubscription"

    @property
    def subscription_set(self) -> str:
        return f"{self.prefix}_preferencesubscriptions"


# ---- catalog ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interest:
    id: str
    name: str
    category_id: str
    category: str
    hidden: bool


@dataclass
class Catalog:
    """An audience's interests, in Mailchimp's category and display order."""

    interests: list[Interest] = field(default_factory=list)
    refreshed: datetime | None = None

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.interests]

    def message_form(self) -> list[list[str]]:
        """[id, name] pairs, as a batch message carries them."""
        return [[i.id, i.name] for i in self.interests]

    def encode(self) -> str:
        return json.dumps(
            [[i.id, i.name, i.category_id, i.category, int(i.hidden)] for i in self.interests], separators=(",", ":")
        )

    @classmethod
    def decode(cls, text: str | None, refreshed: datetime | None = None) -> Catalog:
        items = json.loads(text) if text else []
        return cls([Interest(a, b, c, d, bool(e)) for a, b, c, d, e in items], refreshed)


def read_catalog(mailchimp: MailchimpPort, audience_id: str, counts: Counter[str] | None = None) -> Catalog:
    """The audience's categories and interests: one call for the categories, one per category."""
    interests: list[Interest] = []
    categories = sorted(
        mailchimp.interest_categories(audience_id), key=lambda c: (c.get("display_order", 0), str(c["id"]))
    )
    if counts is not None:
        counts["preference_calls_mailchimp"] += 1 + len(categories)
    for category in categories:
        found = sorted(
            mailchimp.interests(audience_id, str(category["id"])),
            key=lambda i: (i.get("display_order", 0), str(i["id"])),
        )
        interests += [
            Interest(
                str(i["id"]),
                str(i.get("name") or ""),
                str(category["id"]),
                str(category.get("title") or ""),
                category.get("type") == HIDDEN,
            )
            for i in found
        ]
    return Catalog(interests, datetime.now(UTC))


def load_catalog(storage: StoragePort, link: str) -> Catalog | None:

    row = storage.get(SYNC_STATE, link, CATALOG_ROW)
    if row is None:
        return None
    return Catalog.decode(row.get("interests"), parse_time(row.get("refreshed")))


def save_catalog(storage: StoragePort, link: str, catalog: Catalog) -> None:

    storage.write(
        SYNC_STATE,
        [
            upsert(
                {
                    "PartitionKey": link,
                    "RowKey": CATALOG_ROW,
                    "interests": catalog.encode(),
                    "refreshed": (catalog.refreshed or datetime.now(UTC)).isoformat(),
                }
            )
        ],
    )


def mirror_catalog(
    dataverse: DataversePort, names: Names, audience_id: str, catalog: Catalog, counts: Counter[str] | None = None
) -> list[str]:
    """Makes the audience's preference rows match the catalog: one read, then one $batch of upserts.

    Returns a line per preference created, renamed, moved, made public or private, deactivated or reactivated.
    """

    c = names.column
    columns = ["name", "category", "visibility", "audienceid", "interestcategoryid", "interestid", "active"]
    existing: dict[str, dict[str, Any]] = {}
    for page in dataverse.iter_pages(
        names.preference_set,
        select=[f"{names.preference_table}id", *(c(n) for n in columns)],
        filter=f"{c('audienceid')} eq '{audience_id}'",
    ):
        existing.update({str(row[f"{names.preference_table}id"]).lower(): row for row in page})
        if counts is not None:
            counts["preference_calls_dataverse"] += 1
    operations: list[BatchOperation] = []
    said: list[str] = []
    wanted: set[str] = set()
    for interest in catalog.interests:
        row_id = preference_id(audience_id, interest.id)
        wanted.add(row_id)
        body = {
            c("name"): interest.name[:NAME_LENGTH],
            c("category"): interest.category[:NAME_LENGTH],
            c("visibility"): VISIBILITY["private" if interest.hidden else "public"],
            c("audienceid"): audience_id,
            c("interestcategoryid"): interest.category_id,
            c("interestid"): interest.id,
            c("active"): True,
        }
        have = existing.get(row_id)
        changed = [key for key, value in body.items() if have is None or have.get(key) != value]
        if not changed:
            continue
        operations.append(BatchOperation("PATCH", f"{names.preference_set}({row_id})", body))
        said.append(
            f"preference {interest.id} "
            + ("created" if have is None else "updated: " + ", ".join(k.split("_", 1)[1] for k in changed))
        )
    for row_id, row in sorted(existing.items()):
        if row_id not in wanted and row.get(c("active")):
            operations.append(
                BatchOperation("PATCH", f"{names.preference_set}({row_id})", {c("active"): False}, {"If-Match": "*"})
            )
            said.append(f"preference {row.get(c('interestid'))} deactivated (removed in Mailchimp)")
    if operations:
        failed = [
            (op, result) for op, result in zip(operations, dataverse.batch(operations), strict=True) if not result.ok
        ]
        if counts is not None:
            counts["preference_calls_dataverse"] += -(-len(operations) // BATCH_LIMIT)
        if failed:
            op, result = failed[0]
            raise LinkError(
                f"audience {audience_id}",
                f"{len(failed)} marketing preference row(s) could not be written ({op.url_path}: {result.error(op)})",
                f"check that provision has created {names.preference_table}",
            )
    return said


class CatalogWatch:
    """Watches the member pages of a scan for interests the stored catalog does not know (or no longer has)."""

    def __init__(self, known: Catalog | None) -> None:
        self.known = set(known.ids) if known else set()
        self.stale = False

    def chosen(self, member: dict[str, Any]) -> list[str] | None:
        """The interest ids the member has chosen; notes when its interests differ from the catalog's."""
        interests = member.get("interests")
        if interests is None:
            return None
        if set(interests) != self.known:
            self.stale = True
        return sorted(k for k, on in interests.items() if on)


def read_rows(
    dataverse: DataversePort,
    names: Names,
    *,
    audience_id: str,
    kind: str,
    interests: Iterable[str],
    since: datetime | None,
) -> Iterator[list[PreferenceRow]]:
    """Pages of the subscription rows of one record kind changed since a time (all of them without one),
    limited to this audience's interests. One paged read per run, 5,000 rows a page."""
    by_preference = {preference_id(audience_id, i): i for i in interests}
    lookup = names.lookup_value(kind)
    preference = names.lookup_value("preference")
    chosen = " or ".join(f"{preference} eq {pid}" for pid in sorted(by_preference))
    row_filter = f"{lookup} ne null and ({chosen})"  # this audience's interests only
    if since is not None:
        row_filter += f" and modifiedon ge {iso_seconds(since)}"
    key = f"{names.subscription_table}id"
    for page in dataverse.iter_pages(
        names.subscription_set,
        filter=row_filter,
        select=[key, lookup, preference, names.column("optedin"), "modifiedon"],
    ):
        rows = []
        for row in page:
            interest_id = by_preference.get(str(row.get(preference) or "").lower())
            record_id = str(row.get(lookup) or "").lower()
            if interest_id is None or not record_id:
                continue  # another audience's preference, or one this audience no longer has
            row_id = str(row[key]).lower()
            rows.append(
                PreferenceRow(
                    record_id,
                    kind,
                    interest_id,
                    bool(row.get(names.column("optedin"))),
                    parse_time(str(row["modifiedon"]).replace("Z", "+00:00")) or datetime.now(UTC),
                    None if row_id == subscription_id(record_id, audience_id, interest_id) else row_id,
                )
            )
        yield rows


def row_operation(names: Names, audience_id: str, write: RowWrite, interest_name: str) -> Any:
    """The ``$batch`` request for one row write: an upsert by id, answering with the row's new modifiedon."""

    c = names.column
    body: dict[str, Any] = {c("changedby"): CHANGED_BY[write.changed_by]}
    if write.changed_on is not None:
        body[c("changedon")] = iso_seconds(write.changed_on)
    if write.opted_in is not None:
        body.update(
            {
                c("optedin"): write.opted_in,
                c("name"): interest_name[:NAME_LENGTH],
                f"{names.navigation(write.kind)}@odata.bind": f"/{KIND_SETS[write.kind]}({write.record_id})",
                f"{names.navigation('preference')}@odata.bind": (
                    f"/{names.preference_set}({preference_id(audience_id, write.interest_id)})"
                ),
            }
        )
        headers = {"Prefer": "return=representation"}  # no If-Match: a row that is not there yet is created
    else:
        headers = {"Prefer": "return=representation", "If-Match": "*"}  # a stamp never creates a row
    return BatchOperation("PATCH", f"{names.subscription_set}({write.row_id})?$select=modifiedon", body, headers)
