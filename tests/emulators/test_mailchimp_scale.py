"""The Mailchimp emulator at 100,000 members: seeding takes seconds and a page costs what the page holds."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import mailchimp_marketing
import pytest

KEY = "0123456789abcdef0123456789abcdef-us21"
LIST = "big0000001"
SIZE = 100_000
FIELDS = ["members.id", "members.status", "members.last_changed", "total_items"]


def last_changed(i: int) -> str:
    """Spread over 28 days, one member per second of each day's clock, none alike."""
    return f"2024-01-{1 + i % 28:02d}T{(i // 28) // 3600:02d}:{(i // 28) // 60 % 60:02d}:{(i // 28) % 60:02d}+00:00"


@pytest.fixture
def big(mailchimp_emulator: Any) -> tuple[Any, float]:
    """The emulator with 100,000 members, and the seconds the seed took."""
    mailchimp_emulator.admin.seed({"audiences": [{"id": LIST, "name": "Everyone"}]})
    members = [
        {
            "list_id": LIST,
            "email_address": f"person{i}@example.org",
            "status": "unsubscribed" if i % 5 == 0 else "subscribed",
            "last_changed": last_changed(i),
        }
        for i in range(SIZE)
    ]
    started = time.perf_counter()
    mailchimp_emulator.admin.seed({"members": members})
    return mailchimp_emulator, time.perf_counter() - started


@pytest.mark.slow
def test_a_changed_since_page_at_100k_touches_only_the_page(big: tuple[Any, float]) -> None:
    emulator, seed_seconds = big
    print(f"seeded 100,000 members in {seed_seconds:.1f}s")
    client = mailchimp_marketing.Client()
    client.set_config({"api_key": KEY, "server": "us21"})
    client.api_client.host = emulator.url + "/3.0"
    since = "2024-01-14T23:59:59+00:00"
    expected_total = sum(1 for i in range(SIZE) if last_changed(i) > since)  # one format, so text order is time order

    started = time.perf_counter()
    page = client.lists.get_list_members_info(
        LIST,
        count=1000,
        offset=2000,
        fields=FIELDS,
        since_last_changed=since,
        sort_field="last_changed",
        sort_dir="ASC",
    )
    elapsed = time.perf_counter() - started
    assert emulator.admin.call("GET", "stats")["lastMembersScanned"] == 1000
    assert page["total_items"] == expected_total
    assert len(page["members"]) == 1000
    stamps = [m["last_changed"] for m in page["members"]]
    assert stamps == sorted(stamps) and stamps[0] > since
    print(f"a page of 1,000 changed since a time, at 100,000 members: {elapsed * 1000:.0f} ms")

    unsubscribed = client.lists.get_list_members_info(
        LIST, count=1000, fields=FIELDS, status="unsubscribed", since_last_changed=since, sort_field="last_changed"
    )
    assert emulator.admin.call("GET", "stats")["lastMembersScanned"] == 1000
    assert {m["status"] for m in unsubscribed["members"]} == {"unsubscribed"}

    # a write moves the member to the end of the index, and the next read sees it there
    target = hashlib.md5(b"person7@example.org").hexdigest()
    emulator.admin.advance_clock(1)
    client.lists.update_list_member(LIST, target, {"status": "unsubscribed"})
    newest = client.lists.get_list_members_info(
        LIST, count=1, fields=FIELDS, sort_field="last_changed", sort_dir="DESC"
    )
    assert newest["members"][0]["id"] == target
    assert newest["total_items"] == SIZE
    assert client.lists.get_list(LIST)["stats"]["member_count"] == SIZE - SIZE // 5 - 1
