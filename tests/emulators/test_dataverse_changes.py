"""The emulator's change tracking counted: ``<set>/$count`` with a ``$deltatoken`` counts the changes."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

API = "/api/data/v9.2"


def _get(url: str, **kwargs: Any) -> requests.Response:
    return requests.get(url, timeout=30, **kwargs)


def test_count_with_a_delta_token_counts_changes_not_rows(dataverse_emulator: Any) -> None:
    api = dataverse_emulator.url + API
    ids = sorted(str(uuid.uuid4()) for _ in range(5))
    dataverse_emulator.admin.seed({"contacts": [{"contactid": i, "lastname": f"L{n}"} for n, i in enumerate(ids)]})
    first = _get(f"{api}/contacts?$select=lastname", headers={"Prefer": "odata.track-changes"}).json()
    token = parse_qs(urlsplit(first["@odata.deltaLink"]).query)["$deltatoken"][0]
    counted = _get(f"{api}/contacts/$count", params={"$deltatoken": token})
    assert counted.status_code == 200 and counted.text == "0"

    dataverse_emulator.admin.call("POST", "edit", {"entity": "contacts", "id": ids[0], "changes": {"lastname": "X"}})
    dataverse_emulator.admin.call("POST", "edit", {"entity": "contacts", "id": ids[1], "changes": {"lastname": "Y"}})
    dataverse_emulator.admin.call("POST", "delete", {"entity": "contacts", "ids": [ids[2]]})

    counted = _get(f"{api}/contacts/$count", params={"$deltatoken": token})
    changes = _get(first["@odata.deltaLink"]).json()["value"]
    assert counted.text == "3" == str(len(changes))
    assert _get(f"{api}/contacts/$count").text == "4"  # the table's rows, without a token


def test_count_with_a_delta_token_refuses_what_change_tracking_refuses(dataverse_emulator: Any) -> None:
    api = dataverse_emulator.url + API
    first = _get(f"{api}/contacts?$select=lastname", headers={"Prefer": "odata.track-changes"}).json()
    token = parse_qs(urlsplit(first["@odata.deltaLink"]).query)["$deltatoken"][0]
    refused = _get(f"{api}/contacts/$count", params={"$deltatoken": token, "$filter": "lastname eq 'a'"})
    assert refused.status_code == 400 and "$filter" in refused.json()["error"]["message"]
    assert _get(f"{api}/contacts/$count", params={"$deltatoken": "nonsense"}).status_code == 400
