"""What a run costs and what it says: API calls of a run with nothing to do, and log lines free of personal data."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest

from shared.cli import QueueRules, run_sync
from tests.sync_world import SyncWorld, contact, member, new_id

CALLS_PER_IDLE_LINK = 6
STATUS_WRITE = 1  # the link's row in Dynamics: one $batch per run (GET and PATCH of the row, shared/features/status)
OTHER_AUDIENCE = "b9c8d7e6f5"


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite):
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def calls_by_link(world: SyncWorld, links: dict[str, tuple[str, str]]) -> dict[str, dict[str, int]]:
    """API requests since the log was cleared, per link (matched by its audience or list id) and side."""
    found = {name: {"mailchimp": 0, "dataverse": 0} for name in [*links, "unattributed"]}
    for side, running in (("mailchimp", world.mailchimp), ("dataverse", world.dataverse)):
        for request in running.admin.requests():
            text = f"{request['path']}?{request['query']}"
            owner = next((name for name, ids in links.items() if any(i in text for i in ids)), "unattributed")
            found[owner][side] += 1
    return found


def test_a_run_with_no_changes_costs_a_handful_of_calls_per_link(world):
    second_list = new_id()
    world.extra_links.append({"name": f"{world.link}-b", "marketingListId": second_list, "audienceId": OTHER_AUDIENCE})
    people = [contact(f"idle{i}@example.org") for i in range(8)]
    people[2].update(donotbulkemail=True)
    world.seed(
        people,
        [
            member("idle0@example.org"),
            member("idle1@example.org", "unsubscribed"),
            member("idle3@example.org", "pending"),
            member("outsider@example.org"),
        ],
    )
    world.dataverse.admin.seed(
        {
            "lists": [
                {
                    "listid": second_list,
                    "listname": "Second",
                    "type": False,
                    "createdfromcode": 2,
                    "members": [p["contactid"] for p in people[:5]],
                }
            ]
        }
    )
    world.mailchimp.admin.seed(
        {
            "audiences": [{"id": OTHER_AUDIENCE, "name": "Events"}],
            "members": [{"list_id": OTHER_AUDIENCE, **member("idle4@example.org")}],
        }
    )
    links = {world.link: (world.list_id, world.audience), f"{world.link}-b": (second_list, OTHER_AUDIENCE)}
    measured, counted = [], []
    for _ in range(3):  # the first run, the settling run (re-reads the first run's writes), an idle run
        for running in (world.mailchimp, world.dataverse):
            running.admin.clear_requests()
            running.admin.reset_calls()
        code, out = world.sync()
        assert code == 0, out
        measured.append(calls_by_link(world, links))
        counted.append(
            {
                side: sum(running.admin.calls().values())
                for side, running in (("mailchimp", world.mailchimp), ("dataverse", world.dataverse))
            }
        )
    print(f"\nAPI calls per link (first, settling, idle): {measured}; call counts: {counted}")
    assert sum(counted[2].values()) <= (CALLS_PER_IDLE_LINK + STATUS_WRITE) * len(links), counted[2]
    idle = measured[2]
    # the status $batch names no list or audience: per link its POST and its two parts in the request log
    assert idle["unattributed"] == {"mailchimp": 0, "dataverse": 3 * STATUS_WRITE * len(links)}, idle
    for name in links:
        assert sum(idle[name].values()) <= CALLS_PER_IDLE_LINK, (name, idle[name])


# ---- logs ---------------------------------------------------------------------------------------
NAMES = [
    ("Ottoline", "Brackenbury"),
    ("Zephyrine", "Quillfeather"),
    ("Barnabus", "Wetherall"),
    ("Philippa", "Ravenscroft"),
    ("Leontyne", "Abernathy"),
    ("Cassius", "Fotheringay"),
    ("Isolde", "Pendergast"),
    ("Mortimer", "Haverbrook"),
]
ADDRESSES = [
    "ottoline.brackenbury@example.org",
    "zeph.quill@example.org",
    "barnabus+news@example.org",
    "Philippa.Ravenscroft@Example.org",
    "leontyne@site.test",
    "cassius@example.org",
    "isolde.p@example.org",
    "forgotten.mortimer@example.org",
]


def test_no_log_line_carries_an_email_address_or_a_name(world, caplog):
    names = [
        "",
        "consent_bridge",
        "shared",
        "azure",
        "urllib3",
        "requests",
        "functions",
        *logging.root.manager.loggerDict,
    ]
    for name in names:
        caplog.set_level(logging.DEBUG, logger=name)
    people = [
        contact(email, firstname=first, lastname=last) for email, (first, last) in zip(ADDRESSES, NAMES, strict=True)
    ]
    people[5].update(donotbulkemail=True)
    missing_audience = f"{world.link}-gone"
    world.extra_links.append({"name": missing_audience, "marketingListId": world.list_id, "audienceId": "0000000000"})
    world.seed(people, [member("zeph.quill@example.org", "unsubscribed"), member("cassius@example.org")])
    world.mailchimp.admin.seed(
        {"forgotten": [{"list_id": world.audience, "email_address": "forgotten.mortimer@example.org"}]}
    )
    progress: list[str] = []

    def sync(**overrides: str) -> tuple[int, str]:
        out = io.StringIO()
        code = run_sync(
            world.context(**overrides),
            out,
            rules=QueueRules(max_dequeue_count=2, visibility_timeout=0),
            progress=progress.append,
        )
        return code, out.getvalue()

    world.mailchimp.admin.fail_next(1, pattern=r"/members", status=503)  # retries say what they retry
    world.dataverse.admin.call("POST", "settings", {"faultRetryAfter": "0.1"})
    world.dataverse.admin.fail_next(1, pattern=r"\$batch", status=429)
    outputs = [sync()]
    admin: Any = world.mailchimp.admin
    admin.call("POST", "people/unsubscribe", {"list_id": world.audience, "email_address": "isolde.p@example.org"})
    admin.call(
        "POST",
        "people/change-email",
        {
            "list_id": world.audience,
            "email_address": "cassius@example.org",
            "new_email_address": "cassius.new@example.org",
        },
    )
    world.dataverse.admin.call(
        "POST",
        "edit",
        {"entity": "contacts", "id": people[0]["contactid"], "changes": {"emailaddress1": "otto.b@example.org"}},
    )
    world.dataverse.admin.fail_next(50, pattern=r"\$batch", status=500)  # a batch is dead-lettered
    outputs.append(sync())
    world.dataverse.admin.clear_faults()
    outputs.append(sync(full=True))
    assert [code for code, _ in outputs] == [1, 1, 1]  # the missing audience fails its link every time
    assert len(caplog.records) > 20, "the scenario logged too little to prove anything"
    secrets = [a.lower() for a in [*ADDRESSES, "otto.b@example.org", "cassius.new@example.org"]]
    secrets += [part.lower() for pair in NAMES for part in pair]
    formatter = logging.Formatter("%(name)s %(message)s")
    leaks = []
    for record in caplog.records:
        text = formatter.format(record).lower()
        leaks += [(record.name, secret, text[:300]) for secret in secrets if secret in text]
    assert leaks == []
    said = "\n".join([*progress, *(out for _, out in outputs)]).lower()
    assert [s for s in secrets if s in said] == []  # nor the command's output and progress lines
