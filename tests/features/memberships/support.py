"""Two links over two audiences, both holding the same contacts: the world the per-audience tests share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.features.memberships.schema import Names
from shared.rules.addresses import member_hash
from shared.rules.consent import SUBSCRIBER_STATUS_CODES
from shared.rules.memberships import SIDE_DYNAMICS, SIDE_MAILCHIMP
from tests.sync_world import SyncWorld, contact, member, new_id

EVENTS = "e7e6e5e4e3"  # the second audience
NAMES = Names("cbr")
STATUS_BY_CODE = {code: status for status, code in SUBSCRIBER_STATUS_CODES.items()}


@dataclass
class TwoAudiences:
    world: SyncWorld
    second_list: str
    people: list[dict[str, Any]]

    @property
    def second_link(self) -> str:
        return f"{self.world.link}-events"

    def audience_of(self, link: str) -> str:
        return self.world.audience if link == self.world.link else EVENTS

    def sync(self, **overrides: str) -> str:
        code, out = self.world.sync(**overrides)
        assert code == 0, out
        return out

    def person(self, action: str, email: str, audience: str, **extra: Any) -> None:
        """The person acts in Mailchimp: unsubscribe, resubscribe (a signup form), bounce; a few seconds after
        the product's last write (the rules compare whole seconds)."""
        self.world.mailchimp.admin.advance_clock(5)
        self.world.mailchimp.admin.call(
            "POST", f"people/{action}", {"list_id": audience, "email_address": email, **extra}
        )

    def edit(self, record_id: str, **changes: Any) -> None:
        """A user edits a contact in Dynamics."""
        self.world.dataverse.admin.call("POST", "edit", {"entity": "contacts", "id": record_id, "changes": changes})

    def edit_membership(self, row_id: str, status: str) -> None:
        """A user sets a membership's status in Dynamics."""
        self.world.dataverse.admin.call(
            "POST",
            "edit",
            {
                "entity": NAMES.membership_set,
                "id": row_id,
                "changes": {NAMES.column("status"): SUBSCRIBER_STATUS_CODES[status]},
            },
        )

    def statuses(self, email: str) -> dict[str, str | None]:
        """The person's status in each audience (None: not a member)."""
        found: dict[str, str | None] = {}
        for audience in (self.world.audience, EVENTS):
            members = self.world.mailchimp.admin.state(list_id=audience)["audiences"][audience]["members"]
            found[audience] = next((m["status"] for m in members.values() if m["email_address"] == email), None)
        return found

    def opted_out(self, record_id: str) -> tuple[bool, bool]:
        row = self.world.records()[record_id]
        return row["donotbulkemail"], row["donotsendmm"]

    def memberships(self, record_id: str) -> dict[str, str]:
        """The record's membership rows in Dynamics: audience id -> status."""
        rows = self.world.dataverse.admin.state(entity=NAMES.membership_set)["rows"]
        return {
            row[NAMES.column("audienceid")]: STATUS_BY_CODE[row[NAMES.column("status")]]
            for row in rows
            if row.get(NAMES.lookup_value("contact")) == record_id
        }

    def membership_rows(self) -> list[dict[str, Any]]:
        return list(self.world.dataverse.admin.state(entity=NAMES.membership_set)["rows"])

    def history(self, record_id: str | None = None) -> list[dict[str, Any]]:
        """Consent history rows (of one record, or all), oldest first."""
        rows = self.world.dataverse.admin.state(entity=NAMES.change_set)["rows"]
        mine = [r for r in rows if record_id is None or r.get(NAMES.lookup_value("contact")) == record_id]
        return sorted(mine, key=lambda r: (r[NAMES.column("occurredon")], r[NAMES.column("side")]))


def two_audiences(
    world: SyncWorld, count: int = 2, statuses: tuple[str, str] = ("subscribed", "subscribed")
) -> TwoAudiences:
    """``count`` contacts in both marketing lists, each a member of both audiences with these statuses."""
    second_list = new_id()
    world.extra_links.append({"name": f"{world.link}-events", "marketingListId": second_list, "audienceId": EVENTS})
    people = [contact(f"person{i}.{world.link}@example.org") for i in range(count)]  # apart from other tests
    world.seed(people, [member(p["emailaddress1"], statuses[0]) for p in people])
    world.dataverse.admin.seed(
        {
            "lists": [
                {
                    "listid": second_list,
                    "listname": "Events",
                    "type": False,
                    "createdfromcode": 2,
                    "members": [p["contactid"] for p in people],
                }
            ]
        }
    )
    world.mailchimp.admin.seed(
        {
            "audiences": [{"id": EVENTS, "name": "Events"}],
            "members": [{"list_id": EVENTS, **member(p["emailaddress1"], statuses[1])} for p in people],
        }
    )
    return TwoAudiences(world, second_list, people)


def assert_history_matches_the_audit(two: TwoAudiences, email: str, record_id: str) -> None:
    """Every consent change the audit shows for the person has its history row on the record, and every history row
    stands for a consent change the audit shows (same link's audience, run and rule)."""
    hashed = member_hash(email)
    changes: set[tuple[str, str, str, int]] = set()
    anything: set[tuple[str, str, str]] = set()
    for link in (two.world.link, two.second_link):
        for row in two.world.context().storage.query("ConsentAudit", "link eq @l", {"l": link}):
            if row.get("member_hash") != hashed or str(row["rule"]).startswith(("field-", "preference-")):
                continue
            key = (two.audience_of(link), str(row["run_id"]), str(row["rule"]))
            anything.add(key)
            if row.get("mailchimp_new"):
                changes.add((*key, SIDE_MAILCHIMP))
            if any(column in str(row.get("dynamics_new") or "") for column in ("donotbulkemail", "donotsendmm")):
                changes.add((*key, SIDE_DYNAMICS))
    rows = {
        (r[NAMES.column("audienceid")], r[NAMES.column("runid")], r[NAMES.column("rule")], r[NAMES.column("side")])
        for r in two.history(record_id)
    }
    assert changes <= rows, changes - rows
    assert {row[:3] for row in rows} <= anything, rows
