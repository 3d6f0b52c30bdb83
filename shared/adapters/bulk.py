"""A unit's Dataverse writes as bulk messages where the service allows them, ``$batch`` elsewhere.

``write(dataverse, operations)`` takes the same ``BatchOperation`` list a ``$batch`` would and answers one
``BatchResult`` per operation, in order, so callers do not see which way each went:

- plain record PATCHes (``PATCH <set>(<id>)`` with ``If-Match: *``: an update that never creates a record) are
  grouped by table and sent as ``UpdateMultiple``; plain creates (``POST <set>``) as ``CreateMultiple``; each
  only where ``sdkmessagefilters`` says the table supports the message (asked once per message), and where the
  messages cost no more calls than the ``$batch`` pages they save (a few records beside a unit's other rows
  ride in its ``$batch``);
- chunks start at 1,000 records ("a reasonable place to start", bulk-operations.md) and a table's chunk is
  halved whenever the service answers one with a timeout; ``$batch`` pages hold up to 1,000 requests. A write
  is cut into as few chunks and pages as those sizes allow, never more (a smaller piece only adds a call), and
  the pieces run side by side, since the service runs a ``$batch``'s requests one after another;
- on standard tables a bulk message is all or nothing: a chunk the service refuses is sent again as
  ``$batch`` with ``continue-on-error``, that chunk only, so one read-only lead never costs its neighbours;
- everything else (upserts, GETs, writes with ``Content-ID`` references, a record written twice) goes through
  ``$batch`` as before;
- operations tied to a row's write (``BatchOperation.travels_with``, e.g. a consent history row and the record
  PATCH it records) stay out of bulk messages, the write included: each tied group is one change set of one
  ``$batch`` page, so a refused PATCH takes its history row with it while the page's other requests still run;
- at most ``Dataverse.parallelism`` writes are in flight (``x-ms-dop-hint`` bounded by
  ``DATAVERSE_MAX_PARALLEL``), across every thread of the process; a ``Retry-After`` holds them all back (the
  adapter honours it); and two writes to one record are never in flight at once, even from two queue handlers.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from shared.adapters.dataverse import (
    BATCH_LIMIT,
    BatchOperation,
    BatchResult,
    DataverseError,
    Throttled,
    batch_units,
    pack,
)
from shared.adapters.ports import DataversePort as Dataverse
from shared.model.kinds import KIND_SETS

CHUNK_START = 1000  # records per bulk message to begin with
TIMEOUT_CODES = frozenset({"0x80044151"})  # SQL timeout: the message was too large to finish in time
TIMEOUT_STATUSES = frozenset({0, 408, 504})
BATCH_PAGE = BATCH_LIMIT  # requests per $batch page: the service's limit

_RECORD_URL = re.compile(r"^/?(?P<set>[A-Za-z_][A-Za-z0-9_]*)\((?P<id>[0-9a-fA-F-]{36})\)(\?.*)?$")
_SET_URL = re.compile(r"^/?(?P<set>[A-Za-z_][A-Za-z0-9_]*)$")
_LOGICAL_BY_SET = {entity_set: kind for kind, entity_set in KIND_SETS.items()}


class RecordsInFlight:
    """Record ids being written right now in this process; a write waits until none of its records is held."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, record_ids: set[str]) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not (record_ids & self._held))
            self._held |= record_ids
        try:
            yield
        finally:
            with self._changed:
                self._held -= record_ids
                self._changed.notify_all()

    def held(self) -> set[str]:
        with self._changed:
            return set(self._held)


IN_FLIGHT = RecordsInFlight()


@dataclass
class _Bulk:
    """Operations of one table bound for one bulk message."""

    message: str  # UpdateMultiple or CreateMultiple
    entity_set: str
    logical_name: str
    indexes: list[int]


def write(
    dataverse: Dataverse, operations: Sequence[BatchOperation], *, in_flight: RecordsInFlight = IN_FLIGHT
) -> list[BatchResult]:
    """Every operation written, by bulk message or ``$batch``; one result each, in the order given."""
    if not operations:
        return []
    results: list[BatchResult | None] = [None] * len(operations)
    units = batch_units(operations)
    groups, rest = _plan(dataverse, operations, {index for unit in units if len(unit) > 1 for index in unit})
    # the $batch first: when writes go one at a time and it fails, the unit fails before any bulk message is sent,
    # as it did when everything went in one $batch
    tasks = _batch_tasks(dataverse, operations, rest, units, results, in_flight)
    for group in groups:
        for chunk in _chunks(group, dataverse):
            tasks.append(partial(_send_bulk, dataverse, operations, chunk, results, in_flight))
    _run(tasks, dataverse.parallelism)
    return [r if r is not None else BatchResult(424, None) for r in results]


def _plan(dataverse: Dataverse, operations: Sequence[BatchOperation], tied: set[int]) -> tuple[list[_Bulk], list[int]]:
    """Which operations go by bulk message (grouped by message and table) and which by ``$batch`` (the tied ones
    among them: a change set lives only in a ``$batch``)."""
    written: dict[str, int] = {}
    for operation in operations:
        record = _record_id(operation)
        if record:
            written[record] = written.get(record, 0) + 1
    groups: dict[tuple[str, str], _Bulk] = {}
    rest: list[int] = []
    for index, operation in enumerate(operations):
        bulk = None if index in tied else _bulk_kind(operation, written)
        if bulk is None:
            rest.append(index)
            continue
        message, entity_set = bulk
        logical = _LOGICAL_BY_SET.get(entity_set) or entity_set.removesuffix("s")
        groups.setdefault((message, entity_set), _Bulk(message, entity_set, logical, [])).indexes.append(index)
    kept: list[_Bulk] = []
    # every operation starts in the $batch pages; a group leaves them for bulk messages only where its messages cost
    # no call more than the pages its leaving saves, counted against what stays (the groups not yet moved included)
    staying = len(rest) + sum(len(group.indexes) for group in groups.values())
    for group in sorted(groups.values(), key=lambda g: -len(g.indexes)):
        messages = -(-len(group.indexes) // CHUNK_START)
        saved = -(-staying // BATCH_PAGE) - -(-(staying - len(group.indexes)) // BATCH_PAGE)
        if messages <= saved and dataverse.supports_message(group.logical_name, group.message):
            kept.append(group)
            staying -= len(group.indexes)
        else:
            rest.extend(group.indexes)
    return kept, sorted(rest)


def _bulk_kind(operation: BatchOperation, written: dict[str, int]) -> tuple[str, str] | None:
    if operation.content_id is not None or not isinstance(operation.body, dict):
        return None
    if any(isinstance(v, str) and v.startswith("$") for v in operation.body.values()):
        return None  # a Content-ID reference only resolves inside its $batch
    headers = {k.lower(): v for k, v in (operation.headers or {}).items()}
    method = operation.method.upper()
    if method == "PATCH" and headers.get("if-match") == "*" and "if-none-match" not in headers:
        found = _RECORD_URL.match(operation.url_path)
        if found and written.get(found.group("id").lower()) == 1:
            return "UpdateMultiple", found.group("set")
    if method == "POST" and "return=representation" not in headers.get("prefer", ""):
        found = _SET_URL.match(operation.url_path)
        if found:
            return "CreateMultiple", found.group("set")
    return None


def _record_id(operation: BatchOperation) -> str | None:
    found = _RECORD_URL.match(operation.url_path)
    return found.group("id").lower() if found else None


def _chunks(group: _Bulk, dataverse: Dataverse) -> list[list[int]]:
    """The group's operations in as few chunks as the table's chunk size allows, of even size."""
    size = dataverse.chunk_sizes.get(group.logical_name, CHUNK_START)
    step = -(-len(group.indexes) // -(-len(group.indexes) // size))
    return [group.indexes[start : start + step] for start in range(0, len(group.indexes), step)]


def _send_bulk(
    dataverse: Dataverse,
    operations: Sequence[BatchOperation],
    chunk: list[int],
    results: list[BatchResult | None],
    in_flight: RecordsInFlight,
    group: _Bulk | None = None,
) -> None:
    group = group or _group_of(operations, chunk)
    records = {r for r in (_record_id(operations[i]) for i in chunk) if r}
    with in_flight.hold(records), dataverse.write_slot():
        try:
            if group.message == "UpdateMultiple":
                when = dataverse.update_multiple(
                    group.entity_set, group.logical_name, [_target(operations[i]) for i in chunk]
                )
                for index in chunk:
                    results[index] = _updated(operations[index], when)
                return
            ids = dataverse.create_multiple(
                group.entity_set, group.logical_name, [operations[i].body or {} for i in chunk]
            )
            for index, record_id in zip(chunk, ids, strict=True):
                results[index] = BatchResult(
                    204, None, {"OData-EntityId": f"{dataverse.api}/{group.entity_set}({record_id})"}
                )
            return
        except Throttled:
            raise
        except DataverseError as exc:
            too_large = exc.code.lower() in TIMEOUT_CODES or exc.status in TIMEOUT_STATUSES
            if not (too_large and len(chunk) > 1):
                answers = dataverse.batch([operations[i] for i in chunk], continue_on_error=True)
                for index, answer in zip(chunk, answers, strict=True):
                    results[index] = answer
                return
            dataverse.chunk_sizes[group.logical_name] = max(1, len(chunk) // 2)
    half = len(chunk) // 2  # sent again in halves, outside the slot this chunk held
    for part in (chunk[:half], chunk[half:]):
        _send_bulk(dataverse, operations, part, results, in_flight, group)


def _group_of(operations: Sequence[BatchOperation], chunk: list[int]) -> _Bulk:
    first = operations[chunk[0]]
    found = _RECORD_URL.match(first.url_path) or _SET_URL.match(first.url_path)
    assert found is not None
    entity_set = found.group("set")
    message = "UpdateMultiple" if first.method.upper() == "PATCH" else "CreateMultiple"
    return _Bulk(message, entity_set, _LOGICAL_BY_SET.get(entity_set) or entity_set.removesuffix("s"), chunk)


def _target(operation: BatchOperation) -> dict[str, object]:
    found = _RECORD_URL.match(operation.url_path)
    assert found is not None
    entity_set = found.group("set")
    logical = _LOGICAL_BY_SET.get(entity_set) or entity_set.removesuffix("s")
    return {**(operation.body or {}), f"{logical}id": found.group("id").lower()}


def _updated(operation: BatchOperation, when: datetime | None) -> BatchResult:
    """What the PATCH would have answered: ``modifiedon`` when it asked for its representation (the service's
    time after the message, no earlier than the records' own ``modifiedon``)."""
    headers = {k.lower(): v for k, v in (operation.headers or {}).items()}
    if "return=representation" in headers.get("prefer", "") and when is not None:
        return BatchResult(200, {"modifiedon": when.strftime("%Y-%m-%dT%H:%M:%SZ")})
    return BatchResult(204, None)


def _batch_tasks(
    dataverse: Dataverse,
    operations: Sequence[BatchOperation],
    rest: list[int],
    units: list[list[int]],
    results: list[BatchResult | None],
    in_flight: RecordsInFlight,
) -> list[Callable[[], None]]:
    """The ``$batch`` pages of the remaining operations, as few as ``BATCH_PAGE`` allows, of even size, a tied group
    never split: side by side when no record repeats outside its group and no operation refers to another, else all
    in one sequence as before. ``units`` are the operations as the adapter sends them (``batch_units``)."""
    if not rest:
        return []
    staying = set(rest)
    units = [unit for unit in units if unit[0] in staying]  # a tied group is all in the $batch, or not at all
    seen: set[str] = set()
    repeated = False
    for unit in units:
        named = {r for r in (_record_id(operations[i]) for i in unit) if r}
        repeated = repeated or bool(named & seen)
        seen |= named
    linked = any(operations[i].content_id is not None or operations[i].url_path.startswith("$") for i in rest)
    step = -(-len(rest) // -(-len(rest) // BATCH_PAGE))  # as few pages as BATCH_PAGE allows, of even size
    # in one sequence where order matters (the adapter keeps each tied group in one of its requests)
    pages = [rest] if linked or repeated else [[i for unit in page for i in unit] for page in pack(units, step)]

    def send(page: list[int]) -> None:
        held = {r for r in (_record_id(operations[i]) for i in page) if r}
        with in_flight.hold(held), dataverse.write_slot():
            answers = dataverse.batch([operations[i] for i in page], continue_on_error=True)
        for index, answer in zip(page, answers, strict=True):
            results[index] = answer

    return [partial(send, page) for page in pages]


def _run(tasks: list[Callable[[], None]], parallelism: int) -> None:
    if len(tasks) <= 1 or parallelism <= 1:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(max_workers=min(parallelism, len(tasks)), thread_name_prefix="dataverse-write") as pool:
        for future in [pool.submit(task) for task in tasks]:
            future.result()
