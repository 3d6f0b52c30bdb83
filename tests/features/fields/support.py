"""What the field mapping tests share: a world whose audience has the merge fields a test needs."""

from __future__ import annotations

import json
from typing import Any

from shared.provision import provision
from tests.sync_world import SyncWorld

DEFAULT_MERGE_FIELDS = [
    {"tag": "FNAME", "name": "First Name", "type": "text"},
    {"tag": "LNAME", "name": "Last Name", "type": "text"},
    {"tag": "ADDRESS", "name": "Address", "type": "address"},
    {"tag": "PHONE", "name": "Phone Number", "type": "phone"},
]


def field_map(*mappings: dict[str, Any]) -> str:
    return json.dumps(list(mappings))


def seed(
    world: SyncWorld,
    records: list[dict[str, Any]],
    members: list[dict[str, Any]] | None = None,
    *,
    merge_fields: list[dict[str, Any]] | None = None,
    list_type: int = 2,
) -> None:
    """Records in the marketing list (contacts, leads or accounts by ``list_type``) and an audience with these
    merge fields and members."""
    key = {2: "contactid", 4: "leadid", 1: "accountid"}[list_type]
    entity = {2: "contacts", 4: "leads", 1: "accounts"}[list_type]
    world.dataverse.admin.seed(
        {
            entity: records,
            "lists": [
                {
                    "listid": world.list_id,
                    "listname": f"List {world.link}",
                    "type": False,
                    "createdfromcode": list_type,
                    "members": [r[key] for r in records],
                }
            ],
        }
    )
    world.mailchimp.admin.seed(
        {
            "audiences": [
                {"id": world.audience, "name": "Newsletter", "merge_fields": merge_fields or DEFAULT_MERGE_FIELDS}
            ],
            "members": [{"list_id": world.audience, **m} for m in members or []],
        }
    )
    world.provision()


def provision_with_mailchimp(world: SyncWorld) -> list[str]:
    ctx = world.context()
    return provision(ctx.settings, ctx.storage, ctx.dataverse, ctx.mailchimp)


def synced(world: SyncWorld, *, full: bool = False) -> str:
    code, out = world.sync(full=full)
    assert code == 0, out
    return out


def merge_values(world: SyncWorld, email: str) -> dict[str, Any]:
    return world.members()[email]["merge_fields"]


def person_edits(world: SyncWorld, email: str, **merge_fields: Any) -> None:
    """The person edits their profile in Mailchimp."""
    world.mailchimp.admin.call(
        "POST",
        "people/preferences",
        {"list_id": world.audience, "email_address": email, "merge_fields": merge_fields},
    )


def user_edits(world: SyncWorld, record_id: str, entity: str = "contacts", **changes: Any) -> None:
    """A user edits the record in Dynamics, a second or more after the sync last wrote it (Dataverse keeps
    modifiedon to the second; an edit within the second of the sync's own write reads as that write)."""
    world.dataverse.admin.advance_clock(1)
    world.dataverse.admin.call("POST", "edit", {"entity": entity, "id": record_id, "changes": changes})


def field_audits(world: SyncWorld) -> list[dict[str, Any]]:
    return [row for row in world.audit() if str(row.get("rule", "")).startswith("field-")]
