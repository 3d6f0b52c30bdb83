"""A small world for sync tests: the emulators in threads, Azurite, and a Context wired to them."""

from __future__ import annotations

import io
import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from shared.adapters.storage import QUEUES, Storage, poison
from shared.app import Context
from shared.cli import QueueRules, run_sync
from shared.settings import load_settings

API_KEY = "0123456789abcdef0123456789abcdef-us21"
AUDIENCE = "a1b2c3d4e5"
_names = itertools.count(1)


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class SyncWorld:
    mailchimp: Any  # Running
    dataverse: Any  # Running
    connection_string: str
    link: str = ""
    list_id: str = ""
    audience: str = AUDIENCE
    tag: str | None = "crm"
    overrides: dict[str, str] = field(default_factory=dict)
    extra_links: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # storage is partitioned by link name: a fresh name per test keeps tests apart on one Azurite
        self.link = self.link or f"t{next(_names)}-{uuid.uuid4().hex[:6]}"
        self.list_id = self.list_id or new_id()
        storage = Storage(load_settings(self.env()).storage)
        storage.ensure()
        for queue in (*QUEUES, *(poison(q) for q in QUEUES)):
            storage.queue(queue).clear_messages()

    def links(self) -> list[dict[str, Any]]:
        link = {"name": self.link, "marketingListId": self.list_id, "audienceId": self.audience}
        if self.tag:
            link["tag"] = self.tag
        return [link, *self.extra_links]

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            "AzureWebJobsStorage": self.connection_string,
            "MAILCHIMP_API_KEY": API_KEY,
            "MAILCHIMP_BASE_URL": f"{self.mailchimp.url}/3.0",
            "DATAVERSE_URL": self.dataverse.url,
            "SYNC_LINKS": json.dumps(self.links()),
            **self.overrides,
            **overrides,
        }

    def context(self, **overrides: str) -> Context:
        return Context.from_settings(load_settings(self.env(**overrides)))

    def sync(
        self, *, full: bool = False, dry_run: bool = False, retry_delay: float = 0.0, **overrides: str
    ) -> tuple[int, str]:
        out = io.StringIO()
        code = run_sync(
            self.context(**overrides),
            out,
            full=full,
            dry_run=dry_run,
            rules=QueueRules(max_dequeue_count=5, visibility_timeout=retry_delay),
            progress=lambda _: None,
        )
        return code, out.getvalue()

    # ---- seeding --------------------------------------------------------------------------
    def seed(
        self,
        contacts: list[dict[str, Any]],
        members: list[dict[str, Any]] | None = None,
        in_list: list[str] | None = None,
        *,
        list_type: int = 2,
    ) -> None:
        ids = in_list if in_list is not None else [c.get("contactid") or c.get("leadid") for c in contacts]
        entity = {2: "contacts", 4: "leads", 1: "accounts"}[list_type]
        self.dataverse.admin.seed(
            {
                entity: contacts,
                "lists": [
                    {
                        "listid": self.list_id,
                        "listname": f"List {self.link}",
                        "type": False,
                        "createdfromcode": list_type,
                        "members": ids,
                    }
                ],
            }
        )
        self.mailchimp.admin.seed(
            {
                "audiences": [{"id": self.audience, "name": "Newsletter"}],
                "members": [{"list_id": self.audience, **m} for m in members or []],
            }
        )
        self.provision()

    def provision(self) -> list[str]:
        from shared.provision import provision

        ctx = self.context()
        return provision(ctx.settings, ctx.storage, ctx.dataverse)

    def status_writes(self) -> int:
        """The $batch calls that wrote the link's status row in Dynamics (the sync's own count of them)."""
        row = self.context().storage.get("SyncState", self.link, "status") or {}
        return int(row.get("writes") or 0)

    def members(self) -> dict[str, dict[str, Any]]:
        """Mailchimp members of the audience by email address."""
        state = self.mailchimp.admin.state(list_id=self.audience)
        members = state["audiences"][self.audience]["members"]
        return {m["email_address"]: {**m, "id": key} for key, m in members.items()}

    def records(self, entity: str = "contacts") -> dict[str, dict[str, Any]]:
        rows = self.dataverse.admin.state(entity=entity)["rows"]
        key = {"contacts": "contactid", "leads": "leadid", "accounts": "accountid"}[entity]
        return {row[key]: row for row in rows}

    def audit(self) -> list[dict[str, Any]]:
        storage = self.context().storage
        return [dict(row) for row in storage.query("ConsentAudit", "link eq @l", {"l": self.link})]


def contact(email: str | None, *, opted_out: bool = False, **columns: Any) -> dict[str, Any]:
    row = {
        "contactid": new_id(),
        "firstname": "Test",
        "lastname": "Person",
        "emailaddress1": email,
        "donotbulkemail": opted_out,
        "donotsendmm": opted_out,
    }
    row.update(columns)
    return row


def member(email: str, status: str = "subscribed", **fields: Any) -> dict[str, Any]:
    """A member holding the names ``contact`` gives a record by default: the sides agree on the mapped fields."""
    return {
        "email_address": email,
        "status": status,
        "last_changed": "2025-01-06T09:00:00+00:00",
        "merge_fields": {"FNAME": "Test", "LNAME": "Person"},
        **fields,
    }
