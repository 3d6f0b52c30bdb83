"""Authentication, error documents, injected faults and the 10-connection limit of the Mailchimp emulator."""

from __future__ import annotations

import json
import threading
from typing import Any

import mailchimp_marketing
import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError

KEY = "0123456789abcdef0123456789abcdef-us21"
LIST = "a1b2c3d4e5"
PROBLEM_JSON = "application/problem+json; charset=utf-8"


def client_for(url: str, **config: str) -> Any:
    client = mailchimp_marketing.Client()
    client.set_config(config or {"api_key": KEY, "server": "us21"})
    client.api_client.host = url + "/3.0"
    return client


@pytest.fixture
def mc(mailchimp_emulator: Any) -> Any:
    mailchimp_emulator.admin.seed({"audiences": [{"id": LIST, "name": "Newsletter"}]})
    return client_for(mailchimp_emulator.url)


def test_ping_answers_chimpy(mc: Any) -> None:
    assert mc.ping.get() == {"health_status": "Everything's Chimpy!"}


def test_bearer_token_is_accepted(mailchimp_emulator: Any) -> None:
    response = requests.get(
        f"{mailchimp_emulator.url}/3.0/ping",
        timeout=10,
        headers={"Authorization": "Bearer 0123456789abcdef0123456789abcdef"},
    )
    assert response.status_code == 200
    client = client_for(mailchimp_emulator.url, access_token="0123456789abcdef0123456789abcdef", server="us21")
    assert client.ping.get()["health_status"] == "Everything's Chimpy!"


@pytest.mark.parametrize(
    "key", ["not-a-key", "0123456789abcdef0123456789abcdef", "xyz-us21", "0123456789abcdef0123456789abcdeg-us21"]
)
def test_malformed_key_is_api_key_invalid(mailchimp_emulator: Any, key: str) -> None:
    with pytest.raises(ApiClientError) as caught:
        client_for(mailchimp_emulator.url, api_key=key, server="us21").ping.get()
    assert caught.value.status_code == 401
    assert json.loads(caught.value.text)["title"] == "API Key Invalid"


def test_missing_key_is_a_401_problem(mailchimp_emulator: Any) -> None:
    response = requests.get(f"{mailchimp_emulator.url}/3.0/ping", timeout=10)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == PROBLEM_JSON
    assert response.json()["title"] == "API Key Missing"


def test_error_documents_have_the_problem_shape(mailchimp_emulator: Any, mc: Any) -> None:
    response = requests.get(f"{mailchimp_emulator.url}/3.0/lists/nope/members", auth=("x", KEY), timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == PROBLEM_JSON
    assert response.headers["X-Request-Id"]
    body = response.json()
    assert body == {
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": "Resource Not Found",
        "status": 404,
        "detail": "The requested resource could not be found.",
        "instance": response.headers["X-Request-Id"],
    }


def test_unknown_route_and_wrong_method(mailchimp_emulator: Any, mc: Any) -> None:
    unknown = requests.get(f"{mailchimp_emulator.url}/3.0/nothing-here", auth=("x", KEY), timeout=10)
    assert (unknown.status_code, unknown.headers["Content-Type"]) == (404, PROBLEM_JSON)
    wrong = requests.delete(f"{mailchimp_emulator.url}/3.0/lists/{LIST}/members", auth=("x", KEY), timeout=10)
    assert wrong.status_code == 405
    assert wrong.json()["title"] == "Method Not Allowed"
    assert "GET" in wrong.headers["Allow"] and "POST" in wrong.headers["Allow"]


def test_bad_json_is_a_parse_exception(mailchimp_emulator: Any, mc: Any) -> None:
    response = requests.post(
        f"{mailchimp_emulator.url}/3.0/lists/{LIST}/members", data=b"{not json", auth=("x", KEY), timeout=10
    )
    assert response.status_code == 400
    assert response.json()["title"] == "JSON Parse Exception"


def test_wrong_types_name_the_field(mc: Any) -> None:
    with pytest.raises(ApiClientError) as caught:
        mc.lists.add_list_member(LIST, {"email_address": "t@example.org", "status": "subscribed", "vip": "yes"})
    body = json.loads(caught.value.text)
    assert body["title"] == "Invalid Resource"
    assert body["errors"] == [{"field": "vip", "message": "Schema describes boolean, string found instead"}]


def test_fault_429_is_a_problem_document(mailchimp_emulator: Any, mc: Any) -> None:
    mailchimp_emulator.admin.fail_next(1, pattern="/ping", status=429)
    with pytest.raises(ApiClientError) as caught:
        mc.ping.get()
    assert caught.value.status_code == 429
    assert json.loads(caught.value.text)["title"] == "TooManyRequests"
    assert mc.ping.get()["health_status"]


def test_fault_429_empty_comes_back_as_a_raw_response(mailchimp_emulator: Any, mc: Any) -> None:
    mailchimp_emulator.admin.faults(rate=1.0, kinds={"429-empty": 1})
    response = mc.lists.get_list_members_info(LIST)
    assert isinstance(response, requests.Response)
    assert (response.status_code, response.content) == (429, b"")


def test_fault_502_html_and_500_and_503(mailchimp_emulator: Any, mc: Any) -> None:
    mailchimp_emulator.admin.faults(rate=1.0, kinds={"502-html": 1})
    with pytest.raises(ApiClientError) as caught:
        mc.ping.get()
    assert caught.value.status_code == 502
    assert "<html>" in caught.value.text
    for status, title in ((500, "InternalServerError"), (503, "Service Unavailable")):
        mailchimp_emulator.admin.faults(rate=1.0, kinds={str(status): 1})
        with pytest.raises(ApiClientError) as caught:
            mc.ping.get()
        assert caught.value.status_code == status
        assert json.loads(caught.value.text)["title"] == title


def test_more_than_ten_simultaneous_requests_get_429(mailchimp_emulator: Any, mc: Any) -> None:
    mailchimp_emulator.admin.call("POST", "settings", {"latencySeconds": 0.4})
    barrier = threading.Barrier(14)
    statuses: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        barrier.wait()
        response = requests.get(f"{mailchimp_emulator.url}/3.0/ping", auth=("x", KEY), timeout=10)
        with lock:
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.json()["detail"] == "You have exceeded the limit of 10 simultaneous connections."

    threads = [threading.Thread(target=call) for _ in range(14)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(429) >= 1
    assert statuses.count(200) <= 10
    assert set(statuses) == {200, 429}
    mailchimp_emulator.admin.call("POST", "settings", {"latencySeconds": 0})
    assert mc.ping.get()["health_status"]  # the slots are free again
    assert mailchimp_emulator.admin.call("GET", "stats")["inFlight"] == 0


def test_the_limit_is_per_key(mailchimp_emulator: Any) -> None:
    mailchimp_emulator.admin.call("POST", "settings", {"latencySeconds": 0.3, "concurrencyLimit": 1})
    other_key = "fedcba9876543210fedcba9876543210-us21"
    results: dict[str, int] = {}

    def call(name: str, key: str) -> None:
        results[name] = requests.get(f"{mailchimp_emulator.url}/3.0/ping", auth=("x", key), timeout=10).status_code

    threads = [threading.Thread(target=call, args=(name, key)) for name, key in (("a", KEY), ("b", other_key))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {"a": 200, "b": 200}
