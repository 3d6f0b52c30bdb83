"""The Mailchimp emulator's latency model: off by default, time per call and per member, and the 10
simultaneous connections a slow call keeps holding."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

KEY = "0123456789abcdef0123456789abcdef-us21"
AUDIENCE = "lat0001"


def seed(admin: Any, members: int) -> None:
    admin.seed(
        {
            "audiences": [{"id": AUDIENCE, "name": "Latency"}],
            "members": [
                {"list_id": AUDIENCE, "email_address": f"m{n}@example.com", "status": "subscribed"}
                for n in range(members)
            ],
        }
    )


def test_the_model_is_off_by_default(mailchimp_emulator: Any) -> None:
    state = mailchimp_emulator.admin.call("GET", "latency")

    assert state["enabled"] is False and state["totalServerSeconds"] == 0


def test_calls_batches_and_pages_are_charged_their_time(mailchimp_emulator: Any) -> None:
    admin, url = mailchimp_emulator.admin, mailchimp_emulator.url
    seed(admin, 30)
    admin.call("POST", "latency", {"enabled": True, "timeScale": 0.01})

    started = time.perf_counter()
    page = requests.get(f"{url}/3.0/lists/{AUDIENCE}/members?count=20", auth=("x", KEY), timeout=30)
    batch = requests.post(
        f"{url}/3.0/lists/{AUDIENCE}",
        json={"members": [{"email_address": f"n{n}@example.com", "status": "subscribed"} for n in range(12)]},
        auth=("x", KEY),
        timeout=30,
    )
    ping = requests.get(f"{url}/3.0/ping", auth=("x", KEY), timeout=30)
    elapsed = time.perf_counter() - started

    assert page.status_code == batch.status_code == ping.status_code == 200
    charged = admin.call("GET", "latency")["serverSeconds"]
    assert charged["page"] == pytest.approx(0.3 + 20 * 0.001)
    assert charged["batch"] == pytest.approx(0.3 + 12 * 0.01)
    assert charged["call"] == pytest.approx(0.3)
    assert elapsed >= sum(charged.values()) * 0.01


def test_a_slow_call_holds_one_of_the_ten_connections(mailchimp_emulator: Any) -> None:
    admin, url = mailchimp_emulator.admin, mailchimp_emulator.url
    admin.call("POST", "latency", {"enabled": True, "timeScale": 1.0, "callSeconds": 1.0})
    statuses: list[int] = []
    lock = threading.Lock()

    def ping() -> None:
        answer = requests.get(f"{url}/3.0/ping", auth=("x", KEY), timeout=30)
        with lock:
            statuses.append(answer.status_code)

    threads = [threading.Thread(target=ping) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses.count(200) == 10 and statuses.count(429) == 2
    assert admin.call("GET", "latency")["throttled"] == 2
