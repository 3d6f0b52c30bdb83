"""shared.telemetry: the events and dimensions the product reports, and that none of them can carry personal data."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import telemetry

HASH = hashlib.md5(b"someone@example.org").hexdigest()

# (call, expected event, expected dimensions besides "event", expected level)
CASES: list[tuple[Callable[[], None], str, dict[str, object], int]] = [
    (
        lambda: telemetry.run_started("run-1", "newsletter", trigger="http", full=True),
        "run_started",
        {"run_id": "run-1", "link": "newsletter", "trigger": "http", "full": True},
        logging.INFO,
    ),
    (
        lambda: telemetry.run_finished(
            "run-1",
            "newsletter",
            outcome="succeeded",
            records_read=12,
            changes_applied=3,
            skipped=1,
            conflicts=2,
            dead_lettered=0,
            duration_seconds=4.25,
        ),
        "run_finished",
        {
            "run_id": "run-1",
            "link": "newsletter",
            "outcome": "succeeded",
            "read_count": 12,
            "applied_count": 3,
            "skipped_count": 1,
            "conflict_count": 2,
            "dead_lettered_count": 0,
            "duration_seconds": 4.25,
        },
        logging.INFO,
    ),
    (
        lambda: telemetry.run_finished("run-2", "newsletter", outcome="partial", dead_lettered=1),
        "run_finished",
        {
            "run_id": "run-2",
            "link": "newsletter",
            "outcome": "partial",
            "read_count": 0,
            "applied_count": 0,
            "skipped_count": 0,
            "conflict_count": 0,
            "dead_lettered_count": 1,
            "duration_seconds": 0.0,
        },
        logging.WARNING,
    ),
    (
        lambda: telemetry.run_skipped("newsletter", "run-in-progress"),
        "run_skipped",
        {"link": "newsletter", "reason": "run-in-progress"},
        logging.INFO,
    ),
    (
        lambda: telemetry.records_read("newsletter", "mailchimp", 1000, run_id="run-1"),
        "records_read",
        {"link": "newsletter", "side": "mailchimp", "count": 1000, "run_id": "run-1"},
        logging.INFO,
    ),
    (
        lambda: telemetry.changes_applied("newsletter", "dataverse", "rule-2", 7),
        "changes_applied",
        {"link": "newsletter", "side": "dataverse", "rule": "rule-2", "count": 7},
        logging.INFO,
    ),
    (
        lambda: telemetry.skipped("newsletter", "Member In Compliance State", 1, member_hash=HASH),
        "skipped",
        {"link": "newsletter", "reason": "member-in-compliance-state", "count": 1, "member_hash": HASH},
        logging.INFO,
    ),
    (
        lambda: telemetry.conflicts("newsletter", 2, run_id="run-1"),
        "conflicts",
        {"link": "newsletter", "count": 2, "run_id": "run-1"},
        logging.INFO,
    ),
    (
        lambda: telemetry.throttled("newsletter", "mailchimp", 1.5),
        "throttled",
        {"link": "newsletter", "service": "mailchimp", "wait_seconds": 1.5},
        logging.WARNING,
    ),
    (
        lambda: telemetry.dead_lettered("newsletter", "batch-0007", run_id="run-1", members=500),
        "dead_lettered",
        {"link": "newsletter", "stage": "batch", "batch_id": "batch-0007", "run_id": "run-1", "count": 500},
        logging.ERROR,
    ),
    (
        lambda: telemetry.scan_dead_lettered("newsletter", "run-1"),
        "dead_lettered",
        {"link": "newsletter", "stage": "scan", "run_id": "run-1"},
        logging.ERROR,
    ),
    (
        lambda: telemetry.event_dead_lettered("newsletter"),
        "dead_lettered",
        {"link": "newsletter", "stage": "event"},
        logging.ERROR,
    ),
    (
        lambda: telemetry.webhook("mailchimp", "accepted", link="newsletter"),
        "webhook",
        {"side": "mailchimp", "delivery": "accepted", "count": 1, "link": "newsletter"},
        logging.INFO,
    ),
    (
        lambda: telemetry.webhook("dataverse", "refused"),
        "webhook",
        {"side": "dataverse", "delivery": "refused", "count": 1},
        logging.WARNING,
    ),
    (
        lambda: telemetry.events_applied(
            "newsletter", "mailchimp", 12, latency_seconds=1.25, max_latency_seconds=3.5, run_id="run-1"
        ),
        "events_applied",
        {
            "link": "newsletter",
            "side": "mailchimp",
            "count": 12,
            "latency_seconds": 1.25,
            "max_latency_seconds": 3.5,
            "run_id": "run-1",
        },
        logging.INFO,
    ),
    (
        lambda: telemetry.missed_by_webhooks("newsletter", "dataverse", 4, run_id="run-1"),
        "missed_by_webhooks",
        {"link": "newsletter", "side": "dataverse", "count": 4, "run_id": "run-1"},
        logging.WARNING,
    ),
]


def events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == telemetry.LOGGER_NAME and hasattr(r, "custom_dimensions")]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=telemetry.LOGGER_NAME)


@pytest.mark.parametrize(
    ("call", "event", "dimensions", "level"), CASES, ids=[f"{case[1]}-{index}" for index, case in enumerate(CASES)]
)
def test_each_call_emits_one_record_with_its_event_and_dimensions(
    caplog: pytest.LogCaptureFixture,
    call: Callable[[], None],
    event: str,
    dimensions: dict[str, object],
    level: int,
) -> None:
    call()
    (record,) = events(caplog)
    assert record.custom_dimensions == {"event": event, **dimensions}
    assert record.levelno == level
    # The message carries the same dimensions, which is what the host forwards to Application Insights.
    message = record.getMessage()
    assert message.startswith(telemetry.EVENT_MARKER + " {")
    assert telemetry.parse_message(message) == record.custom_dimensions
    assert json.loads(message[len(telemetry.EVENT_MARKER) + 1 :]) == record.custom_dimensions


def test_the_cases_cover_every_event_and_only_defined_dimensions() -> None:
    assert {case[1] for case in CASES} == telemetry.EVENTS
    for _, _, dimensions, _ in CASES:
        assert set(dimensions) <= telemetry.DIMENSIONS
    assert {
        getattr(telemetry, n) for n in dir(telemetry) if n.startswith("EVENT_") and n != "EVENT_MARKER"
    } == telemetry.EVENTS
    assert {getattr(telemetry, n) for n in dir(telemetry) if n.startswith("DIM_")} == telemetry.DIMENSIONS


def test_run_id_appears_only_when_given(caplog: pytest.LogCaptureFixture) -> None:
    telemetry.conflicts("newsletter", 1)
    telemetry.conflicts("newsletter", 1, run_id="2026-11-22T10:15:00Z-ab12")
    first, second = events(caplog)
    assert "run_id" not in first.custom_dimensions
    assert second.custom_dimensions["run_id"] == "2026-11-22T10:15:00Z-ab12"


@pytest.mark.parametrize("field", ["link", "reason", "run_id", "member_hash"])
def test_an_email_passed_by_mistake_is_replaced_and_never_logged(caplog: pytest.LogCaptureFixture, field: str) -> None:
    email = "Jane.Doe@example.org"
    arguments = {
        "link": "newsletter",
        "reason": "invalid-address",
        "run_id": "run-1",
        "member_hash": HASH,
        field: email,
    }
    telemetry.skipped(
        arguments["link"], arguments["reason"], 1, run_id=arguments["run_id"], member_hash=arguments["member_hash"]
    )
    (record,) = events(caplog)
    assert record.custom_dimensions[field] == telemetry.INVALID_VALUE
    warnings = [r for r in caplog.records if r not in events(caplog)]
    assert len(warnings) == 1 and field in warnings[0].getMessage()
    for logged in caplog.records:
        assert email.lower() not in logged.getMessage().lower()
        assert email.lower() not in json.dumps(getattr(logged, "custom_dimensions", {})).lower()


def test_values_outside_the_closed_sets_are_replaced(caplog: pytest.LogCaptureFixture) -> None:
    telemetry.records_read("newsletter", "hubspot", 1)
    telemetry.throttled("newsletter", "smtp", 1.0)
    telemetry.run_finished("run-1", "newsletter", outcome="ok")
    telemetry.run_started("run-1", "newsletter", trigger="cron")
    found = [r.custom_dimensions for r in events(caplog)]
    assert [found[0]["side"], found[1]["service"], found[2]["outcome"], found[3]["trigger"]] == ["invalid"] * 4


def test_a_real_value_that_happens_to_read_invalid_raises_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    telemetry.skipped("newsletter", "invalid", 1)
    assert [r.custom_dimensions["reason"] for r in events(caplog)] == ["invalid"]
    assert len(caplog.records) == 1


@pytest.mark.parametrize("link", ["News letter", "x" * 41, "", "newsletter\n", "Newsletter"])
def test_link_must_have_the_sync_links_name_form(caplog: pytest.LogCaptureFixture, link: str) -> None:
    telemetry.conflicts(link, 1)
    (record,) = events(caplog)
    assert record.custom_dimensions["link"] == telemetry.INVALID_VALUE


@pytest.mark.parametrize("member_hash", [HASH.upper(), HASH[:-1], HASH + "0", "z" * 32])
def test_member_hash_must_be_a_lowercase_md5(caplog: pytest.LogCaptureFixture, member_hash: str) -> None:
    telemetry.skipped("newsletter", "cleaned", 1, member_hash=member_hash)
    (record,) = events(caplog)
    assert record.custom_dimensions["member_hash"] == telemetry.INVALID_VALUE


@pytest.mark.parametrize(("value", "error"), [(-1, ValueError), (True, TypeError), (1.0, TypeError), ("3", TypeError)])
def test_counts_are_whole_numbers_of_zero_or_more(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="count"):
        telemetry.conflicts("newsletter", value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error"),
    [(-0.1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), (False, TypeError), ("1", TypeError)],
)
def test_seconds_are_finite_and_not_negative(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="wait_seconds"):
        telemetry.throttled("newsletter", "dataverse", value)  # type: ignore[arg-type]


def test_full_must_be_a_flag() -> None:
    with pytest.raises(TypeError, match="full"):
        telemetry.run_started("run-1", "newsletter", full="yes")  # type: ignore[arg-type]


def test_seconds_are_rounded_to_milliseconds(caplog: pytest.LogCaptureFixture) -> None:
    telemetry.throttled("newsletter", "dataverse", 2)
    telemetry.run_finished("run-1", "newsletter", outcome="failed", duration_seconds=1 / 3)
    first, second = (r.custom_dimensions for r in events(caplog))
    assert first["wait_seconds"] == 2.0 and isinstance(first["wait_seconds"], float)
    assert second["duration_seconds"] == 0.333


def test_parse_message_ignores_other_log_lines() -> None:
    assert telemetry.parse_message("Executing 'Functions.scan_link'") is None
    assert telemetry.parse_message("cbr-event [1, 2]") is None
    assert telemetry.parse_message('prefix cbr-event {"event":"conflicts"}') == {"event": "conflicts"}


emails = st.emails()


@settings(max_examples=200, deadline=None)
@given(email=emails, field=st.sampled_from(["link", "reason", "rule", "run_id", "batch_id"]))
def test_no_email_address_survives_in_any_dimension(email: str, field: str) -> None:
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    handler = Keep()
    logger = logging.getLogger(telemetry.LOGGER_NAME)
    logger.addHandler(handler)
    try:
        if field in ("link", "rule"):
            telemetry.changes_applied(
                email if field == "link" else "newsletter", "mailchimp", email if field == "rule" else "rule-3", 1
            )
        elif field == "reason":
            telemetry.skipped("newsletter", email, 1)
        elif field == "run_id":
            telemetry.records_read("newsletter", "dataverse", 1, run_id=email)
        else:
            telemetry.dead_lettered("newsletter", email)
    finally:
        logger.removeHandler(handler)
    assert captured
    for record in captured:
        text = record.getMessage() + json.dumps(getattr(record, "custom_dimensions", {}))
        assert "@" not in text
        assert email not in text
