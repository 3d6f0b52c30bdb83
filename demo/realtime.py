"""The demo's real-time part: `serve` on loopback, the webhooks registered, and one change each way (and a user's
audience-scoped opt-out) timed from the moment it is made in one service to the moment the other shows it."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from shared.app import Context
from shared.cli import manage_webhooks
from shared.features.memberships.schema import Names
from shared.features.memberships.steps import membership_id
from shared.rules.addresses import member_hash
from shared.rules.consent import SUBSCRIBER_STATUS_CODES
from shared.serve import Server
from shared.settings import load_settings

SECRET = "demo-webhook-secret-0123456789abcdefghijkl"  # noqa: S105 - the local world's, on loopback only


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(world: Any, links: list[dict[str, Any]], **settings: str) -> Iterator[str]:
    """Serves the app, registers the webhooks, makes one change on each side and says how long each took."""
    port = free_port()
    env = world.settings_env(
        links,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        WEBHOOK_SECRET=SECRET,
        **settings,
    )
    ctx = Context.from_settings(load_settings(env))
    link = ctx.settings.links[0]
    for admin in (world.mailchimp_admin, world.dataverse_admin):
        admin.call("POST", "webhooks/settings", {"timeScale": 0.01})
    with Server(ctx, port=port, retry_seconds=1, timers=False, say=lambda _: None) as server:
        yield f"serving on {server.url}"
        out = io.StringIO()
        manage_webhooks(ctx, "register", out)
        said = out.getvalue().splitlines()
        steps = [line for line in said if line.startswith("Dataverse: step")]
        yield from (f"webhooks register: {line}" for line in said if line not in steps)
        kinds = "Create and Update of contact, lead, account; Update of the audience memberships"
        yield f"webhooks register: Dataverse: {len(steps)} asynchronous steps ({kinds})"
        leaving, opting_out, scoped = _subscribed_contacts(world, link.audience_id, link.marketing_list_id, 3)
        world.mailchimp_admin.call(
            "POST", "people/unsubscribe", {"list_id": link.audience_id, "email_address": leaving["emailaddress1"]}
        )
        started = time.monotonic()
        arrived = _wait(lambda: _contact(world, leaving["contactid"]).get("donotbulkemail") is True)
        yield (
            f"a person unsubscribed in Mailchimp (member {member_hash(leaving['emailaddress1'])[:8]}): Dynamics said "
            f"'Do not allow Bulk Emails' {time.monotonic() - started:.1f} s later" + ("" if arrived else " (not yet)")
        )
        world.dataverse_admin.call(
            "POST", "edit", {"entity": "contacts", "id": opting_out["contactid"], "changes": {"donotbulkemail": True}}
        )
        started = time.monotonic()
        hashed = member_hash(opting_out["emailaddress1"])
        arrived = _wait(lambda: _member_status(world, link.audience_id, hashed) == "unsubscribed")
        yield (
            f"a user opted a contact out in Dynamics (member {hashed[:8]}): Mailchimp said unsubscribed "
            f"{time.monotonic() - started:.1f} s later" + ("" if arrived else " (not yet)")
        )
        names = Names(ctx.settings.dataverse_prefix)
        world.dataverse_admin.call(
            "POST",
            "edit",
            {
                "entity": names.membership_set,
                "id": membership_id(scoped["contactid"], link.audience_id),
                "changes": {names.column("status"): SUBSCRIBER_STATUS_CODES["unsubscribed"]},
            },
        )
        started = time.monotonic()
        hashed = member_hash(scoped["emailaddress1"])
        arrived = _wait(lambda: _member_status(world, link.audience_id, hashed) == "unsubscribed")
        yield (
            f"a user set one audience membership to Unsubscribed in Dynamics (member {hashed[:8]}): Mailchimp said "
            f"unsubscribed in {link.name} only, {time.monotonic() - started:.1f} s later"
            + ("" if arrived else " (not yet)")
        )
        out = io.StringIO()
        manage_webhooks(ctx, "remove", out)
        yield from (f"webhooks remove: {line}" for line in out.getvalue().splitlines())


def _subscribed_contacts(world: Any, audience: str, list_id: str, count: int) -> list[dict[str, Any]]:
    members = world.mailchimp_admin.state(list_id=audience)["audiences"][audience]["members"]
    subscribed = {key for key, m in members.items() if m["status"] == "subscribed"}
    [marketing_list] = [r for r in world.dataverse_admin.state(entity="lists")["rows"] if r["listid"] == list_id]
    in_list = set(marketing_list.get("members") or [])
    found = [
        row
        for row in world.dataverse_admin.state(entity="contacts")["rows"]
        if row["contactid"] in in_list
        and row.get("emailaddress1")
        and not row.get("donotbulkemail")
        and not row.get("donotsendmm")
        and member_hash(row["emailaddress1"]) in subscribed
    ]
    return found[:count]


def _contact(world: Any, contact_id: str) -> dict[str, Any]:
    [row] = world.dataverse_admin.state(entity="contacts", id=contact_id)["rows"]
    return dict(row)


def _member_status(world: Any, audience: str, hashed: str) -> str | None:
    members = world.mailchimp_admin.state(list_id=audience)["audiences"][audience]["members"]
    return members.get(hashed, {}).get("status")


def _wait(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False
