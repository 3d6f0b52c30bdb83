"""The Dataverse emulator's latency model: off by default, server time by kind of request, the x-ms-dop-hint
header, and service protection's concurrency and execution-time limits charged with that time."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.adapters.dataverse import BatchOperation, Dataverse

API = "/api/data/v9.2"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(dataverse_emulator: Any) -> str:
    return dataverse_emulator.url + API


def seed_contacts(admin: Any, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    admin.seed({"contacts": [{"contactid": i, "lastname": f"L{n}"} for n, i in enumerate(ids)]})
    return ids


def test_the_model_is_off_by_default(api: str, dataverse_emulator: Any) -> None:
    seed_contacts(dataverse_emulator.admin, 2)

    answer = requests.get(f"{api}/contacts", timeout=30)

    assert answer.status_code == 200 and "x-ms-dop-hint" not in answer.headers
    state = dataverse_emulator.admin.call("GET", "latency")
    assert state["enabled"] is False and state["totalServerSeconds"] == 0


def test_each_kind_of_request_is_charged_its_server_time(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed_contacts(admin, 4)
    admin.call("POST", "latency", {"enabled": True, "timeScale": 0.01, "dopHint": 6})
    client = Dataverse(dataverse_emulator.url)

    started = time.perf_counter()
    client.batch([BatchOperation("PATCH", f"contacts({i})", {"firstname": "B"}, {"If-Match": "*"}) for i in ids])
    client.update(  # one request on its own
        "contacts", ids[0], {"lastname": "Single"}
    )
    client.update_multiple("contacts", "contact", [{"contactid": i, "firstname": "U"} for i in ids])
    client.create_multiple("contacts", "contact", [{"lastname": "C1"}, {"lastname": "C2"}])
    pages = list(client.iter_pages("contacts", select=["contactid"]))
    elapsed = time.perf_counter() - started

    state = admin.call("GET", "latency")
    charged = state["serverSeconds"]
    assert charged["$batch"] == pytest.approx(4 * 0.04)  # its requests one after another
    assert charged["single"] == pytest.approx(0.12)
    assert charged["UpdateMultiple"] == pytest.approx(4 * 0.03)
    assert charged["CreateMultiple"] == pytest.approx(2 * 0.01)
    assert charged["read"] == pytest.approx(0.05 + len(pages[0]) * 0.0002)
    assert elapsed >= state["totalServerSeconds"] * 0.01  # slept, at the time scale
    assert client.dop_hint == 6


def test_the_execution_time_budget_is_enforced_with_retry_after(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    [record] = seed_contacts(admin, 1)
    admin.call("POST", "throttling", {"executionMs": 300})  # 0.3 modelled seconds per window
    admin.call("POST", "latency", {"enabled": True, "timeScale": 0.01})  # the window is 3 s, the budget 3 ms
    url = f"{api}/contacts({record})"

    answers = [requests.patch(url, json={"firstname": "x"}, headers={"If-Match": "*"}, timeout=30) for _ in range(6)]

    refused = [a for a in answers if a.status_code == 429]
    assert refused, [a.status_code for a in answers]
    assert refused[0].json()["error"]["code"] == "0x80072321"  # combined execution time
    assert 0 < float(refused[0].headers["Retry-After"]) <= 3.0  # scaled: fractions of a second
    assert admin.call("GET", "latency")["throttled"] == len(refused)


def test_concurrent_requests_beyond_the_limit_get_429(api: str, dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed_contacts(admin, 4)
    admin.call("POST", "throttling", {"concurrent": 2})
    admin.call("POST", "latency", {"enabled": True, "timeScale": 1.0, "singleWriteSeconds": 0.5})
    statuses: list[int] = []

    def write(record: str) -> None:
        answer = requests.patch(
            f"{api}/contacts({record})", json={"firstname": "x"}, headers={"If-Match": "*"}, timeout=30
        )
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=write, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [204, 204, 429, 429]


def test_unknown_parameters_are_refused(dataverse_emulator: Any) -> None:
    answer = requests.post(f"{dataverse_emulator.url}/_admin/latency", json={"bogus": 1}, timeout=30)

    assert answer.status_code == 400 and "bogus" in answer.text


def test_the_command_line_flag_switches_the_model_on() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators.dataverse", "--port", "0", "--latency", "model", "--time-scale", "0.5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().strip().rsplit(" ", 1)[1])
        state = requests.get(f"http://127.0.0.1:{port}/_admin/latency", timeout=30).json()
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert state["enabled"] is True and state["timeScale"] == 0.5
