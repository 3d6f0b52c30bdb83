"""Marketing preferences: Mailchimp interests and Dynamics preference subscriptions, kept in step both ways.

Catalog. Mailchimp is the catalog's master. Every interest of a linked audience is one
``<prefix>_marketingpreference`` row (name, category, public or private, audience, category and interest
ids, active); hidden categories are private, the others public. The row id is derived from (audience,
interest), so mirroring is an upsert that needs no lookup; an interest removed in Mailchimp is deactivated,
never deleted (its subscriptions stay as history).

Subscriptions. One ``<prefix>_preferencesubscription`` row per (record, preference) with a lookup to the
contact, lead or account, a lookup to the preference, opted in yes/no, and which side changed it last and
when. The sync's rows have ids derived from (record, audience, interest); a row a user made keeps its own id,
which the identity map remembers. A missing row means "not opted in". Interests travel in the member pages
and batch subscribes of the status sync, rows in its ``$batch``: no call per interest or per person.

The rule, per (person, interest) pair, against the base both sides agreed on last time:
- only one side changed since the base: it wins;
- both changed: the later change wins (the member's ``last_changed`` against the row's ``modifiedon``, to
  the second); a tie opts out;
- first meeting (no base yet): a side that holds nothing takes the other's value, otherwise as both changed.
Mailchimp keeps one ``last_changed`` per member, not per interest, so an interest counts as changed there
when its value differs from the base. A row counts as changed when its ``modifiedon`` is later than the
newest row time agreed, or when its value differs from what the base says Dynamics holds.

Held. A Dynamics change that wins for a member who is unsubscribed, cleaned, archived or not in the audience
is not written to Mailchimp: the base keeps it (value and time) as Dynamics' side of the pair, and the first
run in which the member may be written again (re-subscribed in Mailchimp, confirmed, added) applies it like
any other Dynamics change.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.model.snapshots import KIND_SETS, PreferenceRow, epoch, from_epoch

log = logging.getLogger("consent_bridge.preferences")

_IDS = uuid.UUID("2f6d9c1e-58a4-4b7f-9e3d-7c0a1b5e8f42")  # namespace of the row ids this product derives
VISIBILITY = {"public": 100000000, "private": 100000001}
CHANGED_BY = {"mailchimp": 100000000, "dynamics": 100000001}
WRITABLE_STATUSES = frozenset({"subscribed", "pending", "transactional"})  # may take interest writes
CATALOG_ROW = "catalog"  # SyncState row of a link that holds its audience's interest catalog
HIDDEN = "hidden"  # the interest category type Mailchimp does not show on forms: private preferences
NAME_LENGTH = 200


def preference_id(audience_id: str, interest_id: str) -> str:
    return str(uuid.uuid5(_IDS, f"preference|{audience_id}|{interest_id}"))


def subscription_id(record_id: str, audience_id: str, interest_id: str) -> str:
    return str(uuid.uuid5(_IDS, f"subscription|{record_id.lower()}|{audience_id}|{interest_id}"))


@dataclass(frozen=True)
class Names:
    """Table, column and lookup names under the publisher prefix (DATAVERSE_PREFIX)."""

    prefix: str

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

    def column(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def navigation(self, kind: str) -> str:
        """The lookup's navigation property (its SchemaName), as ``@odata.bind`` takes it."""
        return f"{self.prefix}_{kind.title()}"

    def lookup_value(self, kind: str) -> str:
        return f"_{self.prefix}_{kind}_value"


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


def read_catalog(mailchimp: Any, audience_id: str, counts: Counter[str] | None = None) -> Catalog:
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


def load_catalog(storage: Any, link: str) -> Catalog | None:
    from shared.adapters.storage import SYNC_STATE

    row = storage.get(SYNC_STATE, link, CATALOG_ROW)
    if row is None:
        return None
    return Catalog.decode(row.get("interests"), _parse_time(row.get("refreshed")))


def save_catalog(storage: Any, link: str, catalog: Catalog) -> None:
    from shared.adapters.storage import SYNC_STATE, upsert

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
    dataverse: Any, names: Names, audience_id: str, catalog: Catalog, counts: Counter[str] | None = None
) -> list[str]:
    """Makes the audience's preference rows match the catalog: one read, then one $batch of upserts.

    Returns a line per preference created, renamed, moved, made public or private, deactivated or reactivated.
    """
    from shared.adapters.dataverse import BATCH_LIMIT, BatchOperation

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
            raise RuntimeError(
                f"{len(failed)} marketing preference row(s) of audience {audience_id} could not be "
                f"written ({op.url_path}: {result.error(op)}); check that provision has created "
                f"{names.preference_table}"
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
    dataverse: Any, names: Names, *, audience_id: str, kind: str, interests: Iterable[str], since: datetime | None
) -> Iterator[list[PreferenceRow]]:
    """Pages of the subscription rows of one record kind changed since a time (all of them without one),
    limited to this audience's interests. One paged read per run, 5,000 rows a page."""
    by_preference = {preference_id(audience_id, i): i for i in interests}
    lookup = names.lookup_value(kind)
    preference = names.lookup_value("preference")
    chosen = " or ".join(f"{preference} eq {pid}" for pid in sorted(by_preference))
    row_filter = f"{lookup} ne null and ({chosen})"  # this audience's interests only
    if since is not None:
        row_filter += f" and modifiedon ge {since.strftime('%Y-%m-%dT%H:%M:%SZ')}"
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
                    _parse_time(str(row["modifiedon"]).replace("Z", "+00:00")) or datetime.now(UTC),
                    None if row_id == subscription_id(record_id, audience_id, interest_id) else row_id,
                )
            )
        yield rows


# ---- the rule for one pair --------------------------------------------------------------------------


@dataclass(frozen=True)
class PairSide:
    """One side's view of one (person, interest) pair: its value (None: it holds nothing for the pair),
    whether it changed since the base, and when it last changed."""

    value: bool | None
    changed: bool
    at: datetime | None


@dataclass(frozen=True)
class PairDecision:
    """The value both sides should hold (None: neither holds anything), the side it came from
    ("mailchimp", "dynamics", "both" when they agree, "tie" or "stale" when the opt-out was chosen) and the rule."""

    value: bool | None
    source: str
    rule: str


def decide_pair(base: bool | None, mailchimp: PairSide, dynamics: PairSide) -> PairDecision:
    """The three-way rule for one (person, interest) pair; pure."""
    if base is None:
        if mailchimp.value is None and dynamics.value is None:
            return PairDecision(None, "both", "no-change")
        if dynamics.value is None:
            return PairDecision(mailchimp.value, "mailchimp", "preference-first-meeting-mailchimp-only")
        if mailchimp.value is None:
            return PairDecision(dynamics.value, "dynamics", "preference-first-meeting-dynamics-only")
        if mailchimp.value == dynamics.value:
            return PairDecision(mailchimp.value, "both", "preference-first-meeting-agree")
        return _later("preference-first-meeting", mailchimp, dynamics)
    m = base if mailchimp.value is None else mailchimp.value
    d = base if dynamics.value is None else dynamics.value
    if mailchimp.changed and dynamics.changed:
        if m == d:
            return PairDecision(m, "both", "preference-both-changed-agree")
        return _later("preference-both-changed", replace(mailchimp, value=m), replace(dynamics, value=d))
    if mailchimp.changed:
        return PairDecision(m, "mailchimp", "preference-mailchimp-changed")
    if dynamics.changed:
        return PairDecision(d, "dynamics", "preference-dynamics-changed")
    if m == d:
        return PairDecision(m, "both", "no-change")
    # neither changed yet they disagree (a lost write, a restored backup): no agreement to build on
    return PairDecision(False, "stale", "preference-stale-base-opt-out")


def _later(rule: str, mailchimp: PairSide, dynamics: PairSide) -> PairDecision:
    m_at, d_at = _second(mailchimp.at), _second(dynamics.at)
    if m_at is not None and (d_at is None or m_at > d_at):
        return PairDecision(mailchimp.value, "mailchimp", f"{rule}-mailchimp-later")
    if d_at is not None and (m_at is None or d_at > m_at):
        return PairDecision(dynamics.value, "dynamics", f"{rule}-dynamics-later")
    return PairDecision(False, "tie", f"{rule}-tie-opt-out")


def _second(moment: datetime | None) -> int | None:
    """Both services keep whole seconds; comparing at that precision makes a tie a tie."""
    return None if moment is None else int(_utc(moment).timestamp())


# ---- one person's plan ----------------------------------------------------------------------------


@dataclass
class PreferenceBase:
    """The preference part of one identity-map base (see BaseRow)."""

    agreed: dict[str, bool] = field(default_factory=dict)
    held: dict[str, tuple[bool, datetime | None]] = field(default_factory=dict)
    rows_modifiedon: datetime | None = None
    row_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, row: Any) -> PreferenceBase:
        if row is None:
            return cls()
        return cls(
            dict(row.interests),
            {k: (bool(v[0]), from_epoch(v[1])) for k, v in row.held.items()},
            row.preferences_modifiedon,
            dict(row.preference_rows),
        )

    def fields(self) -> dict[str, Any]:
        """The BaseRow fields that store it."""
        return {
            "interests": dict(self.agreed),
            "held": {k: [v, epoch(at)] for k, (v, at) in sorted(self.held.items())},
            "preferences_modifiedon": self.rows_modifiedon,
            "preference_rows": dict(self.row_ids),
        }

    def copy(self) -> PreferenceBase:
        return PreferenceBase(dict(self.agreed), dict(self.held), self.rows_modifiedon, dict(self.row_ids))


@dataclass(frozen=True)
class MemberView:
    """What is known of the member's interests: read this run (or answered by a write), or not."""

    exists: bool  # the audience holds the member, in any status
    interests: frozenset[str] | None  # chosen interest ids; None: not read this run
    last_changed: datetime | None


@dataclass(frozen=True)
class RowWrite:
    """One upsert of one subscription row; ``opted_in`` None only stamps who changed it last and when."""

    record_id: str
    kind: str
    interest_id: str
    opted_in: bool | None
    changed_by: str
    changed_on: datetime | None
    row_id: str
    before: bool | None  # the row's value before (None: no row, or not known)


@dataclass
class PairChange:
    """What happened to one pair, for the audit."""

    interest_id: str
    rule: str
    value: bool
    mailchimp_before: bool | None
    to_mailchimp: bool  # the value is sent to Mailchimp
    held: bool  # Dynamics' value waits until the member may be written
    newly_held: bool  # held now, and not with this value before (audited once)
    was_held: bool  # a held value, now applied
    mailchimp_at: datetime | None
    dynamics_at: datetime | None


@dataclass
class MemberPlan:
    mailchimp: dict[str, bool]  # interests to send with the member's batch subscribe entry
    rows: list[RowWrite]
    changes: list[PairChange]
    base: PreferenceBase  # to store once every write succeeded
    previous: PreferenceBase

    @property
    def writes(self) -> bool:
        return bool(self.mailchimp or self.rows)


def plan_member(
    *,
    audience_id: str,
    interests: Sequence[str],
    base: PreferenceBase,
    member: MemberView,
    records: Sequence[tuple[str, str]],
    known_records: Iterable[str],
    rows: Sequence[PreferenceRow],
    writable: bool,
) -> MemberPlan:
    """Every interest of one person: decide each pair, and say what to write where (pure).

    ``records`` are the person's syncable (record id, kind); ``known_records`` those the base already covered
    (their unread rows hold what the base says); ``rows`` the subscription rows read this run; ``writable``
    whether Mailchimp may take interests for the member after this run's status decision.
    """
    known = set(known_records)
    mine = {record_id for record_id, _ in records}
    latest: dict[tuple[str, str], PreferenceRow] = {}
    for row in sorted(rows, key=lambda r: r.modifiedon):
        if row.record_id in mine:
            latest[(row.record_id, row.interest_id)] = row
    new = PreferenceBase(
        rows_modifiedon=base.rows_modifiedon,
        row_ids={k: v for k, v in base.row_ids.items() if k.split("|", 1)[0] in mine},
    )
    for (record_id, interest_id), row in latest.items():
        if row.row_id:
            new.row_ids[f"{record_id}|{interest_id}"] = row.row_id
        if new.rows_modifiedon is None or row.modifiedon > new.rows_modifiedon:
            new.rows_modifiedon = row.modifiedon
    plan = MemberPlan({}, [], [], new, base)
    for interest_id in interests:
        agreed = base.agreed.get(interest_id)
        held = base.held.get(interest_id)
        dynamics_holds = held[0] if held else agreed  # what the base says unread rows hold
        if member.interests is not None:
            m_value: bool | None = interest_id in member.interests
        elif not member.exists:
            m_value = None
        else:
            m_value = agreed  # not read: unchanged since the base
        mailchimp = PairSide(
            m_value, agreed is not None and m_value is not None and m_value != agreed, member.last_changed
        )
        pair_rows = [row for (_, i), row in latest.items() if i == interest_id]
        if agreed is None and held is None:
            newest = max(pair_rows, key=lambda r: r.modifiedon, default=None)
            winner_row = newest
            dynamics = PairSide(
                newest.opted_in if newest else None, newest is not None, newest.modifiedon if newest else None
            )
        else:
            moved = [
                row
                for row in pair_rows
                if row.opted_in != dynamics_holds
                or base.rows_modifiedon is None
                or row.modifiedon > base.rows_modifiedon
            ]
            winner_row = max(moved, key=lambda r: r.modifiedon, default=None)
            if winner_row is not None:
                dynamics = PairSide(winner_row.opted_in, True, winner_row.modifiedon)
            elif held is not None:
                dynamics = PairSide(held[0], True, held[1])
            else:
                dynamics = PairSide(dynamics_holds, False, None)
        decision = decide_pair(agreed, mailchimp, dynamics)
        if decision.value is None:
            continue
        value = decision.value
        # a new member starts with no interests; an unread one holds what is unknown, so it always takes the value
        mailchimp_now = False if not member.exists else m_value
        to_mailchimp = mailchimp_now is None or mailchimp_now != value
        keep = False
        if to_mailchimp and writable:
            plan.mailchimp[interest_id] = value
            new.agreed[interest_id] = value
        elif to_mailchimp:
            keep = True
            at = (
                dynamics.at
                if decision.source == "dynamics"
                else max(filter(None, (dynamics.at, member.last_changed)), default=None)
            )
            new.held[interest_id] = (value, at)
            if mailchimp_now is not None:
                new.agreed[interest_id] = mailchimp_now
        else:
            new.agreed[interest_id] = value
        from_mailchimp = m_value == value and decision.source != "dynamics"
        changed_by = "mailchimp" if from_mailchimp else "dynamics"
        changed_on = member.last_changed if from_mailchimp else dynamics.at
        wrote_rows = False
        for record_id, kind in records:
            read = latest.get((record_id, interest_id))
            if read is not None:
                before: bool | None = read.opted_in
            elif record_id in known:
                before = dynamics_holds
            else:
                before = None
            row_id = (
                (read.row_id if read else None)
                or base.row_ids.get(f"{record_id}|{interest_id}")
                or subscription_id(record_id, audience_id, interest_id)
            )
            if (before is None and value) or (before is not None and before != value):
                plan.rows.append(RowWrite(record_id, kind, interest_id, value, changed_by, changed_on, row_id, before))
                wrote_rows = True
            elif read is not None and read is winner_row and changed_by == "dynamics":
                # the person's own edit: say so on the row (the edit itself stays as it is)
                plan.rows.append(
                    RowWrite(record_id, kind, interest_id, None, "dynamics", read.modifiedon, row_id, before)
                )
        if not (to_mailchimp or wrote_rows):
            continue  # both sides already hold the value: nothing changed, nothing to audit
        was_held = held is not None and not keep and to_mailchimp
        plan.changes.append(
            PairChange(
                interest_id,
                "preference-held-applied" if was_held else decision.rule,
                value,
                m_value,
                to_mailchimp and not keep,
                keep,
                keep and (held is None or held[0] != value),
                was_held,
                member.last_changed,
                dynamics.at,
            )
        )
    return plan


def settle(
    plan: MemberPlan, *, mailchimp_ok: bool, failed_rows: set[tuple[str, str]], written_at: datetime | None
) -> PreferenceBase:
    """The base to store, given which writes succeeded: a failed write leaves the pair to be decided again."""
    settled = plan.base.copy()
    if not mailchimp_ok:
        for change in plan.changes:
            if change.to_mailchimp:
                # Mailchimp still holds its value; Dynamics' waits like a held one
                settled.held[change.interest_id] = (change.value, change.dynamics_at or change.mailchimp_at)
                if change.mailchimp_before is None:
                    settled.agreed.pop(change.interest_id, None)
                else:
                    settled.agreed[change.interest_id] = change.mailchimp_before
    for _, interest_id in failed_rows:
        previous = plan.previous.agreed.get(interest_id)
        if previous is None:
            settled.agreed.pop(interest_id, None)
        else:
            settled.agreed[interest_id] = previous
    if written_at is not None and (settled.rows_modifiedon is None or written_at > settled.rows_modifiedon):
        settled.rows_modifiedon = written_at
    return settled


@dataclass
class PreferenceAudit:
    """One ConsentAudit row's worth of preference changes of one person under one rule."""

    rule: str
    record_ids: list[str]
    mailchimp_old: str | None = None
    mailchimp_new: str | None = None
    dynamics_old: str | None = None
    dynamics_new: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    detail: str = ""
    member_last_changed: datetime | None = None
    rows_modifiedon: datetime | None = None


def audits(
    plan: MemberPlan,
    names: dict[str, str],
    *,
    member_hash: str,
    record_ids: list[str],
    mailchimp_failure: str | None,
    row_failures: dict[tuple[str, str], str],
) -> list[PreferenceAudit]:
    """The audit rows of one person's preference changes: one per rule, naming every interest it moved."""
    by_rule: dict[str, list[PairChange]] = {}
    for change in plan.changes:
        if change.held and not change.newly_held:
            continue  # held before with the same value: already in the audit
        by_rule.setdefault("preference-held" if change.held else change.rule, []).append(change)
    found = []
    for rule, changes in by_rule.items():
        wanted = {c.interest_id for c in changes}
        entry = PreferenceAudit(rule, list(record_ids))
        sent = {c.interest_id: c for c in changes if c.to_mailchimp}
        if sent and mailchimp_failure is None:
            entry.mailchimp_old = json.dumps({i: c.mailchimp_before for i, c in sent.items()}, sort_keys=True)
            entry.mailchimp_new = json.dumps({i: c.value for i, c in sent.items()}, sort_keys=True)
        elif sent:
            entry.skipped.append((member_hash, mailchimp_failure or "mailchimp-refused"))
        old: dict[str, dict[str, bool | None]] = {}
        new: dict[str, dict[str, bool]] = {}
        for write in plan.rows:
            if write.interest_id not in wanted or write.opted_in is None:
                continue
            failure = row_failures.get((write.record_id, write.interest_id))
            if failure:
                entry.skipped.append((write.record_id, failure))
                continue
            old.setdefault(write.record_id, {})[write.interest_id] = write.before
            new.setdefault(write.record_id, {})[write.interest_id] = write.opted_in
        if new:
            entry.dynamics_old = json.dumps(old, sort_keys=True)
            entry.dynamics_new = json.dumps(new, sort_keys=True)
        listed = ", ".join(f"{names.get(c.interest_id, c.interest_id)} = {'yes' if c.value else 'no'}" for c in changes)
        entry.detail = f"preferences: {listed}"
        if rule == "preference-held":
            entry.detail += "; kept in Dynamics until the member may be written again (subscribed, pending)"
        entry.member_last_changed = max(filter(None, (c.mailchimp_at for c in changes)), default=None)
        entry.rows_modifiedon = max(filter(None, (c.dynamics_at for c in changes)), default=None)
        if entry.mailchimp_new or entry.dynamics_new or entry.skipped or rule == "preference-held":
            found.append(entry)
    return found


def row_operation(names: Names, audience_id: str, write: RowWrite, interest_name: str) -> Any:
    """The ``$batch`` request for one row write: an upsert by id, answering with the row's new modifiedon."""
    from shared.adapters.dataverse import BatchOperation

    c = names.column
    body: dict[str, Any] = {c("changedby"): CHANGED_BY[write.changed_by]}
    if write.changed_on is not None:
        body[c("changedon")] = _utc(write.changed_on).strftime("%Y-%m-%dT%H:%M:%SZ")
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


# ---- schema --------------------------------------------------------------------------------------


def provision_schema(dataverse: Any, prefix: str) -> list[str]:
    """The preference and subscription tables, their columns, lookups and views; a line per thing created."""
    from shared.adapters import schema

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
        attributes = "".join(f'<attribute name="{a}"/>' for a in [f"{subscription}id", *shown])
        where = f'<filter type="and">{condition}</filter>'
        link = ""
        if on_preference:
            link = (
                f'<link-entity name="{preference}" from="{preference}id" to="{c("preference")}" '
                f'link-type="inner" alias="preference">{where}</link-entity>'
            )
            where = ""
        return (
            f'<fetch version="1.0" mapping="logical"><entity name="{subscription}">{attributes}'
            f'<order attribute="{c("changedon")}" descending="true"/>{where}{link}</entity></fetch>'
        )

    cells = "".join(f'<cell name="{a}" width="150"/>' for a in shown)
    layout = (
        f'<grid name="resultset" object="10001" jump="{c("name")}" select="1" icon="1" preview="1">'
        f'<row name="result" id="{subscription}id">{cells}</row></grid>'
    )
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


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
