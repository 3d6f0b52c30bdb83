"""Every request the adapter sends, checked against Mailchimp's official OpenAPI 3.1.1 schema.

The adapter is driven against the emulator over loopback; the emulator's request log (method, route,
path, query, body) is then validated operation by operation against
``shared/reference/mailchimp-openapi-subset.json`` (beside the repository) with jsonschema Draft 2020-12,
honouring the reference README: the PUT member ``oneOf`` is read as ``anyOf``, and batch subscribe
``members`` gets ``maxItems: 500``. Stricter than the published spec, an object schema that lists its
properties refuses any other property, so an invented field cannot slip through.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator, FormatChecker

from shared.adapters.mailchimp import Mailchimp
from shared.rules.addresses import member_hash

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO_ROOT.parent / "shared" / "reference" / "mailchimp-openapi-subset.json"

# RFC 3339 date-time, as "format": "date-time" means in JSON Schema 2020-12.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats only constrain strings
    if not _RFC3339.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


class SpecCheck:
    """Validates one recorded request against its operation in the OpenAPI subset."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.operations: list[tuple[str, str, re.Pattern[str], dict[str, Any]]] = []
        for template, methods in spec["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$")
            for method, operation in methods.items():
                self.operations.append((method.upper(), template, pattern, operation))
        self._validators: dict[tuple[str, str], Draft202012Validator] = {}

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        for op_method, template, pattern, operation in self.operations:
            if op_method == method.upper() and pattern.match(path):
                return template, operation
        return None

    def body_validator(self, method: str, template: str) -> Draft202012Validator | None:
        key = (method.upper(), template)
        if key not in self._validators:
            operation = self.spec["paths"][template][method.lower()]
            request_body = operation.get("requestBody")
            if request_body is None:
                return None
            schema = copy.deepcopy(request_body["content"]["application/json"]["schema"])
            if key == ("PUT", "/3.0/lists/{list_id}/members/{subscriber_hash}") and "oneOf" in schema:
                # README: a body with both status and status_if_new matches both branches of the published oneOf
                schema["anyOf"] = schema.pop("oneOf")
            if key == ("POST", "/3.0/lists/{list_id}"):
                # README: "Up to 500 members" is only in the description of members
                schema["properties"]["members"]["maxItems"] = 500
            # the components travel with the schema so "#/components/schemas/..." resolves
            rooted = _closed(
                {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "components": copy.deepcopy(self.spec["components"]),
                    **schema,
                }
            )
            Draft202012Validator.check_schema(rooted)
            self._validators[key] = Draft202012Validator(rooted, format_checker=FORMATS)
        return self._validators[key]

    def errors(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> list[str]:
        """Every way the request breaks the schema; [] when it conforms."""
        found = self.operation(method, path)
        if found is None:
            return [f"{method} {path} is not an operation of the OpenAPI subset"]
        template, operation = found
        problems: list[str] = []
        validator = self.body_validator(method, template)
        if validator is None:
            if body not in (None, ""):
                problems.append(f"{method} {template} takes no body, got {body!r:.80}")
        elif body is None:
            if operation["requestBody"].get("required"):
                problems.append(f"{method} {template} requires a JSON body")
        else:
            problems += [
                f"{method} {template} body {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in validator.iter_errors(body)
            ]
        parameters = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
        for name, values in query.items():
            parameter = parameters.get(name)
            if parameter is None:
                problems.append(f"{method} {template} has no query parameter {name!r}")
                continue
            if len(values) != 1:
                problems.append(f"{method} {template} query {name!r} sent {len(values)} times")
                continue
            value = _query_value(values[0], parameter["schema"])
            problems += [
                f"{method} {template} query {name}={values[0]!r}: {e.message}"
                for e in Draft202012Validator(parameter["schema"], format_checker=FORMATS).iter_errors(value)
            ]
        return problems


def _closed(schema: Any) -> Any:
    """Every object schema that lists its properties refuses others: the adapter sends only declared fields.

    The published spec never sets ``additionalProperties: false``, so without this an invented field
    would pass; an object declared with no properties (batch operation ``params``) stays open.
    """
    if isinstance(schema, dict):
        closed = {key: _closed(value) for key, value in schema.items()}
        if isinstance(schema.get("properties"), dict) and schema["properties"] and "additionalProperties" not in schema:
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


def _query_value(raw: str, schema: dict[str, Any]) -> Any:
    """A query string value read the way the spec types it (form style, explode false for arrays)."""
    kind = schema.get("type")
    if kind == "integer":
        return int(raw) if re.fullmatch(r"-?\d+", raw) else raw
    if kind == "boolean":
        # Mailchimp reads true/1 and false/0, case-insensitively
        return {"true": True, "1": True, "false": False, "0": False}.get(raw.lower(), raw)
    if kind == "array":
        return raw.split(",")
    return raw


@pytest.fixture(scope="module")
def spec_check() -> SpecCheck:
    if not SPEC_PATH.is_file():
        pytest.fail(
            f"The Mailchimp OpenAPI subset is missing: expected {SPEC_PATH} (the shared/ folder is "
            "cloned beside the repository). Clone it there, then run the tests again."
        )
    return SpecCheck(json.loads(SPEC_PATH.read_text(encoding="utf-8")))


# ---- the validator itself: it must reject what the schema forbids ------------------------------

MEMBER = "/3.0/lists/a1b2c3d4e5/members/" + "0" * 32


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "expected"),
    [
        ("PUT", MEMBER, {}, {"email_address": "a@example.com", "status": "archived"}, "is not one of"),
        ("PUT", MEMBER, {}, {"status_if_new": "subscribed"}, "is not valid under any of the given schemas"),
        ("PATCH", MEMBER, {}, {"status": "transactional"}, "is not one of"),
        ("PATCH", MEMBER, {}, {"interests": {"abc": "yes"}}, "is not of type 'boolean'"),
        ("PATCH", MEMBER, {}, {"status_if_new": "subscribed"}, "Additional properties are not allowed"),
        (
            "POST",
            MEMBER + "/tags",
            {},
            {"tags": [{"name": "vip", "status": "active", "colour": "red"}]},
            "Additional properties are not allowed",
        ),
        (
            "POST",
            "/3.0/lists/a1b2c3d4e5",
            {},
            {"members": [{"email_address": f"p{i}@example.com", "status": "subscribed"} for i in range(501)]},
            "is too long",
        ),
        (
            "POST",
            "/3.0/lists/a1b2c3d4e5",
            {},
            {"members": [{"email_address": "a@example.com"}]},
            "is not valid under any of the given schemas",
        ),
        (
            "POST",
            "/3.0/lists/a1b2c3d4e5",
            {},
            {"members": [{"email_address": "a@example.com", "status": "subscribed", "timestamp_opt": "yesterday"}]},
            "is not a 'date-time'",
        ),
        ("POST", MEMBER + "/tags", {}, {"tags": [{"name": "vip"}]}, "'status' is a required property"),
        (
            "POST",
            "/3.0/lists/a1b2c3d4e5/webhooks",
            {},
            {"url": "https://x.example", "events": {"subscribe": "yes"}},
            "is not of type 'boolean'",
        ),
        (
            "POST",
            "/3.0/batches",
            {},
            {"operations": [{"method": "PUT", "path": "/lists/x", "body": {"a": 1}}]},
            "is not of type 'string'",
        ),
        ("GET", "/3.0/lists/a1b2c3d4e5/members", {"count": ["1001"]}, None, "is greater than the maximum"),
        ("GET", "/3.0/lists/a1b2c3d4e5/members", {"sort_dir": ["asc"]}, None, "is not one of"),
        ("GET", "/3.0/lists/a1b2c3d4e5/members", {"email": ["a@example.com"]}, None, "has no query parameter"),
        ("GET", "/3.0/campaigns", {"since_send_time": ["2024-01-01T00:00:00"]}, None, "is not a 'date-time'"),
        ("GET", "/3.0/lists/a1b2c3d4e5/members", {}, {"x": 1}, "takes no body"),
        ("PUT", "/3.0/lists/a1b2c3d4e5/segments/1", {}, {}, "not an operation of the OpenAPI subset"),
    ],
)
def test_the_validator_rejects_what_the_schema_forbids(
    spec_check: SpecCheck, method: str, path: str, query: dict[str, list[str]], body: Any, expected: str
) -> None:
    problems = spec_check.errors(method, path, query, body)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("method", "path", "query", "body"),
    [
        # both status and status_if_new: fails the published oneOf, passes once it is read as anyOf
        ("PUT", MEMBER, {}, {"email_address": "a@example.com", "status_if_new": "subscribed", "status": "pending"}),
        (
            "POST",
            "/3.0/lists/a1b2c3d4e5",
            {},
            {
                "members": [{"email_address": f"p{i}@example.com", "status_if_new": "subscribed"} for i in range(500)],
                "update_existing": True,
            },
        ),
        (
            "GET",
            "/3.0/lists/a1b2c3d4e5/members",
            {"fields": ["members.email_address,total_items"], "count": ["1000"], "sort_dir": ["ASC"]},
            None,
        ),
        ("GET", "/3.0/campaigns", {"since_send_time": ["2024-01-01T00:00:00+00:00"]}, None),
    ],
)
def test_the_validator_accepts_what_the_schema_allows(
    spec_check: SpecCheck, method: str, path: str, query: dict[str, list[str]], body: Any
) -> None:
    assert spec_check.errors(method, path, query, body) == []


def test_the_published_put_member_one_of_needs_the_readme_correction(spec_check: SpecCheck) -> None:
    """Without reading oneOf as anyOf, a body with status and status_if_new would be refused."""
    schema = spec_check.spec["paths"]["/3.0/lists/{list_id}/members/{subscriber_hash}"]["put"]["requestBody"]
    literal = Draft202012Validator(
        {"components": spec_check.spec["components"], **schema["content"]["application/json"]["schema"]}
    )
    both = {"email_address": "a@example.com", "status_if_new": "subscribed", "status": "pending"}
    assert not literal.is_valid(both)
    assert spec_check.body_validator("PUT", "/3.0/lists/{list_id}/members/{subscriber_hash}").is_valid(both)


# ---- the adapter's real requests, read back from the emulator's log ----------------------------

KEY = "0123456789abcdef0123456789abcdef-us21"
LIST = "a1b2c3d4e5"

# Every operation of the subset the adapter uses (it never calls the create-only POST /members).
ADAPTER_OPERATIONS = {
    ("POST", "/3.0/batches"),
    ("GET", "/3.0/campaigns"),
    ("POST", "/3.0/lists/{list_id}"),
    ("GET", "/3.0/lists/{list_id}/interest-categories"),
    ("GET", "/3.0/lists/{list_id}/interest-categories/{interest_category_id}/interests"),
    ("GET", "/3.0/lists/{list_id}/members"),
    ("GET", "/3.0/lists/{list_id}/members/{subscriber_hash}"),
    ("PUT", "/3.0/lists/{list_id}/members/{subscriber_hash}"),
    ("PATCH", "/3.0/lists/{list_id}/members/{subscriber_hash}"),
    ("DELETE", "/3.0/lists/{list_id}/members/{subscriber_hash}"),
    ("POST", "/3.0/lists/{list_id}/members/{subscriber_hash}/tags"),
    ("POST", "/3.0/lists/{list_id}/webhooks"),
    ("GET", "/3.0/reports/{campaign_id}/email-activity"),
    ("GET", "/3.0/reports/{campaign_id}/sent-to"),
    ("GET", "/3.0/reports/{campaign_id}/unsubscribed"),
}
# Calls outside the subset: they carry no body and only paging, type or fields in the query.
OUTSIDE_THE_SUBSET = {
    ("GET", "/3.0/ping"),
    ("GET", "/3.0/lists/{list_id}"),
    ("GET", "/3.0/lists/{list_id}/segments"),
    ("POST", "/3.0/lists/{list_id}/segments/{segment_id}"),
    ("GET", "/3.0/batches/{batch_id}"),
    ("GET", "/_batch-results/{archive}"),
}


def exercise_every_method(running: Any) -> None:
    """Calls every adapter method once or more, with every optional argument that changes the request."""
    seeded = running.admin.seed(
        {
            "audiences": [{"id": LIST, "name": "Newsletter"}],
            "interest_categories": [
                {
                    "list_id": LIST,
                    "title": "Topics",
                    "type": "checkboxes",
                    "interests": [{"name": "Events"}, {"name": "Offers"}],
                }
            ],
            "members": [
                {
                    "list_id": LIST,
                    "email_address": f"person{i}@example.com",
                    "status": "subscribed",
                    "tags": ["Newsletter"] if i < 3 else [],
                }
                for i in range(20)
            ],
        }
    )
    interest_ids = [i["id"] for i in seeded["interest_categories"][0]["interests"]]
    mc = Mailchimp(KEY, running.url + "/3.0", backoff_seconds=0.001)
    since = datetime.now(UTC) - timedelta(days=1)
    mc.ping()
    mc.audience(LIST)
    for status in (None, "subscribed"):
        list(
            mc.iter_member_pages(
                LIST,
                since_last_changed=since,
                fields=["email_address", "status", "last_changed"],
                status=status,
                page_size=7,
            )
        )
    first = member_hash("person0@example.com")
    mc.member(LIST, first)
    mc.member(LIST, first, fields=["email_address", "status"])
    mc.upsert_member(
        LIST,
        "new.person@example.com",
        status_if_new="subscribed",
        interests={interest_ids[0]: True, interest_ids[1]: False},
        merge_fields={"FNAME": "Ann"},
    )
    mc.upsert_member(LIST, "person1@example.com", status_if_new="subscribed", status="unsubscribed")
    mc.update_member(
        LIST,
        member_hash("person2@example.com"),
        {
            "status": "pending",
            "merge_fields": {"LNAME": "Lee"},
            "interests": {interest_ids[1]: True},
            "timestamp_signup": datetime(2024, 5, 1, 12, 0, 0, 123, tzinfo=UTC),
        },
    )
    mc.update_member(LIST, member_hash("person3@example.com"), {"email_address": "moved@example.com"})
    mc.archive_member(LIST, member_hash("person4@example.com"))
    mc.batch_subscribe(
        LIST,
        [
            {
                "email_address": f"bulk{i}@example.com",
                "status_if_new": "subscribed",
                "merge_fields": {"FNAME": f"B{i}"},
                "tags": ["Imported"],
                "timestamp_opt": datetime(2024, 5, 1, tzinfo=UTC),
            }
            for i in range(501)
        ]
        + [{"email_address": "person5@example.com", "status": "unsubscribed", "interests": {interest_ids[0]: True}}],
    )
    mc.batch_subscribe(LIST, [{"email_address": "person6@example.com", "status": "subscribed"}], update_existing=False)
    mc.update_member_tags(LIST, first, {"VIP": True, "Newsletter": False})
    mc.tag_segment_id(LIST, "Newsletter")
    mc.add_tag_members(LIST, "Newsletter", ["person7@example.com"])
    mc.remove_tag_members(LIST, "Newsletter", ["person1@example.com"])
    categories = mc.interest_categories(LIST)
    mc.interests(LIST, categories[0]["id"])
    campaign = running.admin.call("POST", "campaigns", {"list_id": LIST, "title": "June", "send": True})
    running.admin.call(
        "POST", f"campaigns/{campaign['id']}/activity", {"email_address": "person8@example.com", "action": "open"}
    )
    list(mc.iter_campaigns(LIST, since))
    list(mc.iter_campaigns(LIST, None))
    list(mc.iter_email_activity(campaign["id"]))
    list(mc.iter_email_activity(campaign["id"], since=since))
    list(mc.iter_sent_to(campaign["id"]))
    list(mc.iter_unsubscribed(campaign["id"]))
    mc.create_webhook(
        LIST,
        "https://bridge.example.com/api/mailchimp",
        {"subscribe": True, "unsubscribe": True, "profile": True, "cleaned": True, "upemail": True, "campaign": False},
        {"user": True, "admin": True, "api": False},
    )
    mc.run_batch_operations(
        [
            {
                "method": "GET",
                "path": f"/lists/{LIST}/members/{first}",
                "params": {"fields": "status"},
                "operation_id": "read",
            },
            {
                "method": "PATCH",
                "path": f"/lists/{LIST}/members/{member_hash('person9@example.com')}",
                "body": {"status": "unsubscribed"},
                "operation_id": "write",
            },
        ],
        poll_seconds=0.01,
    )


def check_log(
    spec_check: SpecCheck, log: list[dict[str, Any]]
) -> tuple[list[str], set[tuple[str, str]], set[tuple[str, str]]]:
    """(problems, operations validated, calls outside the subset) for a request log."""
    problems: list[str] = []
    validated: set[tuple[str, str]] = set()
    outside: set[tuple[str, str]] = set()
    for request in log:
        found = spec_check.operation(request["method"], request["path"])
        if found is None:
            outside.add((request["method"], request["route"]))
            continue
        validated.add((request["method"], found[0]))
        problems += spec_check.errors(request["method"], request["path"], request["query"], request["body"])
    return problems, validated, outside


def test_every_request_the_adapter_sends_conforms_to_the_official_schema(
    mailchimp_emulator: Any, spec_check: SpecCheck
) -> None:
    exercise_every_method(mailchimp_emulator)
    log = mailchimp_emulator.admin.requests()
    problems, validated, outside = check_log(spec_check, log)
    assert problems == []
    assert validated == ADAPTER_OPERATIONS
    assert outside == OUTSIDE_THE_SUBSET
    for request in log:
        if (request["method"], request["route"]) in OUTSIDE_THE_SUBSET - {("GET", "/_batch-results/{archive}")}:
            # the results archive is a pre-signed storage URL Mailchimp hands out, used as given
            assert request["body"] is None or request["route"].endswith("{segment_id}"), request
            assert set(request["query"]) <= {"type", "count", "offset", "fields"}, request


def test_a_request_that_breaks_the_schema_is_caught_in_the_log(mailchimp_emulator: Any, spec_check: SpecCheck) -> None:
    """The same log check flags a bad body sent past the adapter, so the test above can fail."""
    mailchimp_emulator.admin.seed({"audiences": [{"id": LIST, "name": "Newsletter"}]})
    member = f"{mailchimp_emulator.url}/3.0/lists/{LIST}/members/{member_hash('x@example.com')}"
    auth = ("anystring", KEY)
    requests.put(member, json={"email_address": "x@example.com", "status": "archived"}, auth=auth, timeout=10)
    requests.get(
        f"{mailchimp_emulator.url}/3.0/lists/{LIST}/members",
        params={"fields": "m,e,m", "count": 5000, "sort_dir": "up"},
        auth=auth,
        timeout=10,
    )
    problems, _, _ = check_log(spec_check, mailchimp_emulator.admin.requests())
    assert any("body status: 'archived' is not one of" in p for p in problems), problems
    assert any("count=" in p and "greater than the maximum" in p for p in problems), problems
    assert any("sort_dir='up'" in p for p in problems), problems
