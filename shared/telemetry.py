"""Every event, dimension and value Consent Bridge reports to Application Insights, and the calls that emit them.

Each call writes one log record on the ``consent_bridge.telemetry`` logger. The record carries its dimensions twice:
in ``extra={"custom_dimensions": {...}}`` for handlers that read structured extras, and as JSON in the message
text after the marker ``cbr-event``. The Functions host forwards only the message text of a Python log record
to Application Insights (extras are dropped by the language worker), so the workbook and the alert rules read
the dimensions out of ``traces.message``::

    traces
    | where message has "cbr-event"
    | extend d = parse_json(extract(@"cbr-event ([{].*)", 1, message))
    | where tostring(d.event) == "run_finished"

Only counts, link names, run and batch ids, member hashes and reason/rule slugs are accepted. A text value that
does not have its expected form (an email address passed by mistake, say) is replaced by ``invalid`` and the
dimension is named in a warning, so a telemetry call never leaks personal data and data never makes it fail.
A count or a duration of the wrong type is a bug in the caller and raises.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping

LOGGER_NAME = "consent_bridge.telemetry"
EVENT_MARKER = "cbr-event"
INVALID_VALUE = "invalid"

# Events: the value of the ``event`` dimension.
EVENT_RUN_STARTED = "run_started"
EVENT_RUN_FINISHED = "run_finished"
EVENT_RUN_SKIPPED = "run_skipped"
EVENT_RECORDS_READ = "records_read"
EVENT_CHANGES_APPLIED = "changes_applied"
EVENT_SKIPPED = "skipped"
EVENT_CONFLICTS = "conflicts"
EVENT_THROTTLED = "throttled"
EVENT_DEAD_LETTERED = "dead_lettered"
EVENT_WEBHOOK = "webhook"  # deliveries to a webhook route, by how they were answered
EVENT_EVENTS_APPLIED = "events_applied"  # real-time events reconciled, with their latency
EVENT_MISSED_BY_WEBHOOKS = "missed_by_webhooks"  # changes a scheduled scan found that no event announced
EVENTS = frozenset(
    {
        EVENT_RUN_STARTED,
        EVENT_RUN_FINISHED,
        EVENT_RUN_SKIPPED,
        EVENT_RECORDS_READ,
        EVENT_CHANGES_APPLIED,
        EVENT_SKIPPED,
        EVENT_CONFLICTS,
        EVENT_THROTTLED,
        EVENT_DEAD_LETTERED,
        EVENT_WEBHOOK,
        EVENT_EVENTS_APPLIED,
        EVENT_MISSED_BY_WEBHOOKS,
    }
)

# Dimensions: the keys of ``custom_dimensions`` and of the JSON in the message.
DIM_EVENT = "event"
DIM_RUN_ID = "run_id"
DIM_LINK = "link"
DIM_TRIGGER = "trigger"
DIM_FULL = "full"
DIM_OUTCOME = "outcome"
DIM_SIDE = "side"
DIM_RULE = "rule"
DIM_REASON = "reason"
DIM_SERVICE = "service"
DIM_COUNT = "count"
DIM_WAIT_SECONDS = "wait_seconds"
DIM_BATCH_ID = "batch_id"
DIM_MEMBER_HASH = "member_hash"
DIM_READ_COUNT = "read_count"
DIM_APPLIED_COUNT = "applied_count"
DIM_SKIPPED_COUNT = "skipped_count"
DIM_CONFLICT_COUNT = "conflict_count"
DIM_DEAD_LETTERED_COUNT = "dead_lettered_count"
DIM_DURATION_SECONDS = "duration_seconds"
DIM_STAGE = "stage"
DIM_DELIVERY = "delivery"
DIM_LATENCY_SECONDS = "latency_seconds"  # median of a group of events: fired (or changed) -> applied
DIM_MAX_LATENCY_SECONDS = "max_latency_seconds"
DIMENSIONS = frozenset(
    {
        DIM_EVENT,
        DIM_RUN_ID,
        DIM_LINK,
        DIM_TRIGGER,
        DIM_FULL,
        DIM_OUTCOME,
        DIM_SIDE,
        DIM_RULE,
        DIM_REASON,
        DIM_SERVICE,
        DIM_COUNT,
        DIM_WAIT_SECONDS,
        DIM_BATCH_ID,
        DIM_MEMBER_HASH,
        DIM_READ_COUNT,
        DIM_APPLIED_COUNT,
        DIM_SKIPPED_COUNT,
        DIM_CONFLICT_COUNT,
        DIM_DEAD_LETTERED_COUNT,
        DIM_DURATION_SECONDS,
        DIM_STAGE,
        DIM_DELIVERY,
        DIM_LATENCY_SECONDS,
        DIM_MAX_LATENCY_SECONDS,
    }
)

# Closed value sets of the enumerated dimensions.
SIDE_MAILCHIMP = "mailchimp"
SIDE_DATAVERSE = "dataverse"
SIDES = frozenset({SIDE_MAILCHIMP, SIDE_DATAVERSE})

SERVICE_MAILCHIMP = "mailchimp"
SERVICE_DATAVERSE = "dataverse"
SERVICE_STORAGE = "storage"
SERVICES = frozenset({SERVICE_MAILCHIMP, SERVICE_DATAVERSE, SERVICE_STORAGE})

OUTCOME_SUCCEEDED = "succeeded"
OUTCOME_PARTIAL = "partial"  # finished, but at least one batch went to the poison queue
OUTCOME_FAILED = "failed"
OUTCOMES = frozenset({OUTCOME_SUCCEEDED, OUTCOME_PARTIAL, OUTCOME_FAILED})

TRIGGER_TIMER = "timer"
TRIGGER_HTTP = "http"
TRIGGER_CLI = "cli"
TRIGGERS = frozenset({TRIGGER_TIMER, TRIGGER_HTTP, TRIGGER_CLI})

# What was dead-lettered: a link's scan (sync-links-poison) or a reconcile or campaign batch (sync-batches-poison).
STAGE_SCAN = "scan"
STAGE_BATCH = "batch"
STAGE_EVENT = "event"  # a real-time event (sync-events-poison)
STAGES = frozenset({STAGE_SCAN, STAGE_BATCH, STAGE_EVENT})

# How a webhook delivery was answered: accepted (enqueued, 200), refused (wrong or missing secret or signature,
# 401), unparseable (400), ignored (an audience or table no link uses, 200), echo (the product's own write, 200),
# failed (the queue refused, 5xx: the sender retries).
DELIVERY_ACCEPTED = "accepted"
DELIVERY_REFUSED = "refused"
DELIVERY_UNPARSEABLE = "unparseable"
DELIVERY_IGNORED = "ignored"
DELIVERY_ECHO = "echo"
DELIVERY_FAILED = "failed"
DELIVERIES = frozenset(
    {DELIVERY_ACCEPTED, DELIVERY_REFUSED, DELIVERY_UNPARSEABLE, DELIVERY_IGNORED, DELIVERY_ECHO, DELIVERY_FAILED}
)

VALUES_BY_DIMENSION: Mapping[str, frozenset[str]] = {
    DIM_EVENT: EVENTS,
    DIM_SIDE: SIDES,
    DIM_SERVICE: SERVICES,
    DIM_OUTCOME: OUTCOMES,
    DIM_TRIGGER: TRIGGERS,
    DIM_STAGE: STAGES,
    DIM_DELIVERY: DELIVERIES,
}

LINK_NAME = re.compile(r"[a-z0-9-]{1,40}")  # the SYNC_LINKS name contract
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,79}")
SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MEMBER_HASH = re.compile(r"[0-9a-f]{32}")

_log = logging.getLogger(LOGGER_NAME)


class _Rejected(str):
    """The stand-in for a value that did not have its expected form; told apart from a real value by type."""


_REJECTED = _Rejected(INVALID_VALUE)


def run_started(run_id: str, link: str, *, trigger: str = TRIGGER_TIMER, full: bool = False) -> None:
    """A run of one link began (timer tick, ``POST /api/sync`` or the command line)."""
    _emit(
        EVENT_RUN_STARTED,
        logging.INFO,
        {
            DIM_RUN_ID: _identifier(run_id),
            DIM_LINK: _link(link),
            DIM_TRIGGER: _member_of(DIM_TRIGGER, trigger),
            DIM_FULL: _flag(DIM_FULL, full),
        },
    )


def run_finished(
    run_id: str,
    link: str,
    *,
    outcome: str,
    records_read: int = 0,
    changes_applied: int = 0,
    skipped: int = 0,
    conflicts: int = 0,
    dead_lettered: int = 0,
    duration_seconds: float = 0.0,
) -> None:
    """The last batch of a run finished and the watermarks were committed (or the run gave up)."""
    level = logging.INFO if outcome == OUTCOME_SUCCEEDED else logging.WARNING
    _emit(
        EVENT_RUN_FINISHED,
        level,
        {
            DIM_RUN_ID: _identifier(run_id),
            DIM_LINK: _link(link),
            DIM_OUTCOME: _member_of(DIM_OUTCOME, outcome),
            DIM_READ_COUNT: _count(DIM_READ_COUNT, records_read),
            DIM_APPLIED_COUNT: _count(DIM_APPLIED_COUNT, changes_applied),
            DIM_SKIPPED_COUNT: _count(DIM_SKIPPED_COUNT, skipped),
            DIM_CONFLICT_COUNT: _count(DIM_CONFLICT_COUNT, conflicts),
            DIM_DEAD_LETTERED_COUNT: _count(DIM_DEAD_LETTERED_COUNT, dead_lettered),
            DIM_DURATION_SECONDS: _seconds(DIM_DURATION_SECONDS, duration_seconds),
        },
    )


def run_skipped(link: str, reason: str, *, run_id: str | None = None) -> None:
    """A link was not run at all, e.g. ``run-in-progress`` when another run still holds its lease."""
    _emit(
        EVENT_RUN_SKIPPED,
        logging.INFO,
        {
            DIM_LINK: _link(link),
            DIM_REASON: _slug(reason),
            **_optional_run(run_id),
        },
    )


def records_read(link: str, side: str, n: int, *, run_id: str | None = None) -> None:
    """``n`` changed records or members were read from one side."""
    _emit(
        EVENT_RECORDS_READ,
        logging.INFO,
        {
            DIM_LINK: _link(link),
            DIM_SIDE: _member_of(DIM_SIDE, side),
            DIM_COUNT: _count(DIM_COUNT, n),
            **_optional_run(run_id),
        },
    )


def changes_applied(link: str, side: str, rule: str, n: int, *, run_id: str | None = None) -> None:
    """``n`` writes were made to one side because of one consent rule."""
    _emit(
        EVENT_CHANGES_APPLIED,
        logging.INFO,
        {
            DIM_LINK: _link(link),
            DIM_SIDE: _member_of(DIM_SIDE, side),
            DIM_RULE: _slug(rule),
            DIM_COUNT: _count(DIM_COUNT, n),
            **_optional_run(run_id),
        },
    )


def skipped(link: str, reason: str, n: int, *, run_id: str | None = None, member_hash: str | None = None) -> None:
    """``n`` records were refused for one reason (audited, counted, never failing the batch)."""
    dimensions = {
        DIM_LINK: _link(link),
        DIM_REASON: _slug(reason),
        DIM_COUNT: _count(DIM_COUNT, n),
        **_optional_run(run_id),
    }
    if member_hash is not None:
        dimensions[DIM_MEMBER_HASH] = _member_hash(member_hash)
    _emit(EVENT_SKIPPED, logging.INFO, dimensions)


def conflicts(link: str, n: int, *, run_id: str | None = None) -> None:
    """``n`` pairs had both sides changed since the base with different meanings (rule 4)."""
    _emit(
        EVENT_CONFLICTS,
        logging.INFO,
        {
            DIM_LINK: _link(link),
            DIM_COUNT: _count(DIM_COUNT, n),
            **_optional_run(run_id),
        },
    )


def throttled(link: str, service: str, wait_seconds: float, *, run_id: str | None = None) -> None:
    """A call to ``service`` was answered 429 and waited ``wait_seconds`` (its ``Retry-After``, or a back-off)."""
    _emit(
        EVENT_THROTTLED,
        logging.WARNING,
        {
            DIM_LINK: _link(link),
            DIM_SERVICE: _member_of(DIM_SERVICE, service),
            DIM_WAIT_SECONDS: _seconds(DIM_WAIT_SECONDS, wait_seconds),
            **_optional_run(run_id),
        },
    )


def dead_lettered(link: str, batch_id: str, *, run_id: str | None = None, members: int = 0) -> None:
    """A batch reached the poison queue; its ``members`` emails are kept for retry in the next run.

    Emitted once per batch (the alert counts these events, not the host's own poison-queue log line)."""
    _emit(
        EVENT_DEAD_LETTERED,
        logging.ERROR,
        {
            DIM_LINK: _link(link),
            DIM_STAGE: STAGE_BATCH,
            DIM_BATCH_ID: _identifier(batch_id),
            DIM_COUNT: _count(DIM_COUNT, members),
            **_optional_run(run_id),
        },
    )


def scan_dead_lettered(link: str, run_id: str) -> None:
    """A link's scan reached the poison queue: its run failed and the next run reads from the same watermarks."""
    _emit(
        EVENT_DEAD_LETTERED,
        logging.ERROR,
        {
            DIM_LINK: _link(link),
            DIM_STAGE: STAGE_SCAN,
            DIM_RUN_ID: _identifier(run_id),
        },
    )


def event_dead_lettered(link: str | None) -> None:
    """A real-time event reached sync-events-poison; the next scheduled run reads its change."""
    dimensions: dict[str, object] = {DIM_STAGE: STAGE_EVENT}
    if link is not None:
        dimensions[DIM_LINK] = _link(link)
    _emit(EVENT_DEAD_LETTERED, logging.ERROR, dimensions)


def webhook(side: str, delivery: str, n: int = 1, *, link: str | None = None) -> None:
    """``n`` deliveries from one service were answered one way (``DELIVERIES``)."""
    dimensions = {
        DIM_SIDE: _member_of(DIM_SIDE, side),
        DIM_DELIVERY: _member_of(DIM_DELIVERY, delivery),
        DIM_COUNT: _count(DIM_COUNT, n),
    }
    if link is not None:
        dimensions[DIM_LINK] = _link(link)
    level = logging.WARNING if delivery in (DELIVERY_REFUSED, DELIVERY_FAILED) else logging.INFO
    _emit(EVENT_WEBHOOK, level, dimensions)


def events_applied(
    link: str, side: str, n: int, *, latency_seconds: float, max_latency_seconds: float, run_id: str | None = None
) -> None:
    """``n`` real-time events from one side were reconciled; latency from when the change happened (Mailchimp's
    ``fired_at``, the Dataverse operation's time) to when it was applied."""
    _emit(
        EVENT_EVENTS_APPLIED,
        logging.INFO,
        {
            DIM_LINK: _link(link),
            DIM_SIDE: _member_of(DIM_SIDE, side),
            DIM_COUNT: _count(DIM_COUNT, n),
            DIM_LATENCY_SECONDS: _seconds(DIM_LATENCY_SECONDS, latency_seconds),
            DIM_MAX_LATENCY_SECONDS: _seconds(DIM_MAX_LATENCY_SECONDS, max_latency_seconds),
            **_optional_run(run_id),
        },
    )


def missed_by_webhooks(link: str, side: str, n: int, *, run_id: str) -> None:
    """A scheduled scan read ``n`` changes on one side that no real-time event announced: a silent webhook."""
    _emit(
        EVENT_MISSED_BY_WEBHOOKS,
        logging.WARNING if n else logging.INFO,
        {
            DIM_LINK: _link(link),
            DIM_SIDE: _member_of(DIM_SIDE, side),
            DIM_COUNT: _count(DIM_COUNT, n),
            DIM_RUN_ID: _identifier(run_id),
        },
    )


def parse_message(message: str) -> dict[str, object] | None:
    """The dimensions carried by a telemetry message, or None when the text is not one (the queries' inverse)."""
    found = re.search(EVENT_MARKER + r" (\{.*\})", message)
    if found is None:
        return None
    payload = json.loads(found.group(1))
    return payload if isinstance(payload, dict) else None


def _emit(event: str, level: int, dimensions: dict[str, object]) -> None:
    payload = {DIM_EVENT: event, **dimensions}
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    _log.log(level, "%s %s", EVENT_MARKER, text, extra={"custom_dimensions": payload})
    rejected = sorted(name for name, value in dimensions.items() if isinstance(value, _Rejected))
    if rejected:
        # The rejected value itself is never logged: it may be the email address or name it must not carry.
        _log.warning(
            "telemetry event %s: dimension(s) %s did not have their expected form and were replaced by "
            "'%s'; pass link names, ids, member hashes or reason slugs only",
            event,
            ", ".join(rejected),
            INVALID_VALUE,
        )


def _optional_run(run_id: str | None) -> dict[str, object]:
    return {} if run_id is None else {DIM_RUN_ID: _identifier(run_id)}


def _link(value: object) -> str:
    return value if isinstance(value, str) and LINK_NAME.fullmatch(value) else _REJECTED


def _identifier(value: object) -> str:
    return value if isinstance(value, str) and IDENTIFIER.fullmatch(value) else _REJECTED


def _slug(value: object) -> str:
    # Mailchimp titles such as "Member In Compliance State" become "member-in-compliance-state".
    if not isinstance(value, str):
        return _REJECTED
    slug = re.sub(r"\s+", "-", value.strip().lower())
    return slug if SLUG.fullmatch(slug) else _REJECTED


def _member_hash(value: object) -> str:
    return value if isinstance(value, str) and MEMBER_HASH.fullmatch(value) else _REJECTED


def _member_of(name: str, value: object) -> str:
    return value if isinstance(value, str) and value in VALUES_BY_DIMENSION[name] else _REJECTED


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"telemetry dimension {name} expects True or False, got {type(value).__name__}")
    return value


def _count(name: str, value: object) -> int:
    # Counts come from code, not data: a wrong one is a bug, so it raises instead of being replaced.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"telemetry dimension {name} expects a whole number, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"telemetry dimension {name} expects a count of zero or more, got {value}")
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"telemetry dimension {name} expects seconds as a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"telemetry dimension {name} expects zero or more finite seconds, got {value}")
    return round(float(value), 3)
