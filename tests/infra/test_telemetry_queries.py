"""The workbook and the alert rules read only what shared.telemetry writes, and read it the way it is written."""

from __future__ import annotations

import json
import logging
import re

import pytest

from shared import telemetry
from tests.infra import templates as t

WORKBOOK_QUERIES = t.workbook_queries()
ALERT_QUERIES = t.alert_queries()
QUERIES = {**WORKBOOK_QUERIES, **ALERT_QUERIES}
EVENT_QUERIES = {where: query for where, query in QUERIES.items() if t.DIMENSION_REFERENCE.search(query)}


def compared_values(query: str) -> list[tuple[str, str]]:
    """(dimension, value) for every `tostring(d.X) == "v"` and every value of `tostring(d.X) in (...)`."""
    pairs = list(t.COMPARISON.findall(query))
    for dimension, listed in t.MEMBERSHIP.findall(query):
        pairs.extend((dimension, value) for value in t.QUOTED.findall(listed))
    return pairs


def test_the_queries_were_found() -> None:
    assert len(WORKBOOK_QUERIES) >= 10
    assert set(ALERT_QUERIES) == {
        "poisonAlert[0]",
        "failureAlert[0]",
        "staleAlert[0]",
        "throttleAlert[0]",
        "silentWebhooksAlert[0]",
    }
    assert len(EVENT_QUERIES) >= 12


@pytest.mark.parametrize("where", sorted(QUERIES))
def test_query_names_only_dimensions_that_telemetry_defines(where: str) -> None:
    unknown = set(t.DIMENSION_REFERENCE.findall(QUERIES[where])) - telemetry.DIMENSIONS
    assert not unknown, f"{where} reads dimensions shared/telemetry.py never writes: {sorted(unknown)}"
    assert "customDimensions" not in QUERIES[where], (
        f"{where}: the host drops Python log extras; read the dimensions from the message"
    )


@pytest.mark.parametrize("where", sorted(QUERIES))
def test_query_compares_events_and_enumerations_only_with_defined_values(where: str) -> None:
    for dimension, value in compared_values(QUERIES[where]):
        assert dimension in telemetry.DIMENSIONS, f"{where}: unknown dimension {dimension}"
        allowed = telemetry.VALUES_BY_DIMENSION.get(dimension)
        if allowed is not None:
            assert value in allowed, f"{where}: {dimension} is never {value!r}; telemetry writes {sorted(allowed)}"


@pytest.mark.parametrize("where", sorted(EVENT_QUERIES))
def test_query_parses_the_message_exactly_as_telemetry_writes_it(
    where: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    query = EVENT_QUERIES[where]
    assert f'message has "{telemetry.EVENT_MARKER}"' in query
    (pattern,) = t.EXTRACT.findall(query)
    assert re.search(r"\bd = parse_json\(extract\(", query), f"{where}: the parsed dimensions must be named d"
    caplog.set_level(logging.INFO, logger=telemetry.LOGGER_NAME)
    telemetry.changes_applied("newsletter", "mailchimp", "rule-2", 3, run_id="run-9")
    (record,) = caplog.records
    # KQL regular expressions are RE2; the pattern uses no feature where RE2 and Python differ.
    found = re.search(pattern, record.getMessage())
    assert found, f"{where}: {pattern!r} does not match {record.getMessage()!r}"
    assert json.loads(found.group(1)) == record.custom_dimensions


def test_every_event_the_product_emits_is_watched_somewhere() -> None:
    referenced = {value for query in QUERIES.values() for dim, value in compared_values(query) if dim == "event"}
    assert referenced == telemetry.EVENTS


def _events_in(query: str) -> set[str]:
    return {value for dim, value in compared_values(query) if dim == "event"}


def test_alerts_watch_poison_failures_stale_links_and_throttling() -> None:
    poison = ALERT_QUERIES["poisonAlert[0]"]
    assert _events_in(poison) == {telemetry.EVENT_DEAD_LETTERED}
    # One event per dead-lettered scan or batch: the host's own MaxDequeueCount line would count each a second time.
    assert "MaxDequeueCount" not in poison and "-poison" not in poison
    assert "by link = tostring(d.link), stage = tostring(d.stage)" in poison
    assert "success == false" in ALERT_QUERIES["failureAlert[0]"]
    stale = ALERT_QUERIES["staleAlert[0]"]
    assert ("outcome", telemetry.OUTCOME_SUCCEEDED) in compared_values(stale)
    assert "__STALE_AFTER__" in stale
    # The configured links drive it: a link that logs nothing at all (an app that never starts) still alerts.
    assert "dynamic(__LINKS__)" in stale and "tostring(entry.name)" in stale
    assert "join kind=leftouter runs on link" in stale
    throttle = ALERT_QUERIES["throttleAlert[0]"]
    assert _events_in(throttle) == {telemetry.EVENT_THROTTLED}
    assert "sum(todouble(d.wait_seconds))" in throttle


def test_workbook_charts_runs_changes_by_rule_skips_and_errors_per_link() -> None:
    items = {item.get("name"): item for item in t.workbook()["items"]}
    expectations = {
        "runs-over-time": ({telemetry.EVENT_RUN_FINISHED}, "outcome"),
        "changes-by-rule": ({telemetry.EVENT_CHANGES_APPLIED}, "rule"),
        "skips-per-link": ({telemetry.EVENT_SKIPPED}, "link"),
        "errors-per-link": (
            {telemetry.EVENT_DEAD_LETTERED, telemetry.EVENT_THROTTLED, telemetry.EVENT_RUN_FINISHED},
            "link",
        ),
    }
    for name, (expected_events, split) in expectations.items():
        content = items[name]["content"]
        assert content["visualization"] == "timechart"
        assert _events_in(content["query"]) == expected_events, name
        assert f"tostring(d.{split})" in content["query"].split("summarize", 1)[1], f"{name} is not split by {split}"
        assert "bin(timestamp, {TimeRange:grain})" in content["query"]
        assert content["crossComponentResources"] == ["__APP_INSIGHTS_ID__"]
