"""The bound bulk messages ``CreateMultiple`` and ``UpdateMultiple`` of the Dataverse emulator.

``POST /api/data/v9.2/<entityset>/Microsoft.Dynamics.CRM.UpdateMultiple`` with ``{"Targets": [...]}``, every
target carrying ``@odata.type`` (``Microsoft.Dynamics.CRM.<table>``) and, for an update, its primary key;
204 on success. ``CreateMultiple`` answers 200 with ``{"Ids": [...]}`` in the order of the targets.
As on standard tables (bulk-operations.md): one transaction, so any error rolls every target back and the
answer is that error; no set limit on the number of records, but a message whose modelled time exceeds the
latency model's ``sqlTimeoutSeconds`` fails as a SQL timeout; contact, lead, account and custom tables support
the messages, the other tables answer as the service does for a table without them. Each target goes
through the same rules as a single create or ``PATCH`` with ``If-Match: *`` (read-only leads, unknown
columns, lengths, lookups). Texts the published documentation does not give are marked ``# text unverified``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from email.message import Message
from typing import TYPE_CHECKING, Any

from emulators.common import Request, Response

from .errors import ENTITY, ApiError
from .values import parse_guid

if TYPE_CHECKING:
    from .schema import Table
    from .server import DataverseEmulator

# standard tables the seeded sdkmessagefilters list for both messages; custom tables always support them
SUPPORTING_TABLES = frozenset({"contact", "lead", "account"})
SQL_TIMEOUT = "0x80044151"  # CRM ErrorCode -2147204783


def multiple_handlers(emulator: DataverseEmulator) -> dict[str, Callable[[Request], Response]]:
    return {
        "CreateMultiple": lambda request: create_multiple(emulator, request),
        "UpdateMultiple": lambda request: update_multiple(emulator, request),
    }


def supports(table: Table) -> bool:
    return table.is_custom or table.logical_name in SUPPORTING_TABLES


def create_multiple(emulator: DataverseEmulator, request: Request) -> Response:
    table, targets = _targets(emulator, request, "CreateMultiple")
    ids: list[str] = []
    with emulator.data_lock:
        emulator.store.begin()
        try:
            for target in targets:
                inner = _inner(request, "POST", f"/api/data/v9.2/{table.entity_set_name}", target, {})
                inner.params = {"entityset": table.entity_set_name}
                answer = emulator._create(inner)
                ids.append(answer.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")"))
        except ApiError:
            emulator.store.rollback()
            raise
        emulator.store.commit()
        emulator.bulk_targets[f"CreateMultiple {table.entity_set_name}"] += len(ids)
    base = f"http://{request.header('Host') or '127.0.0.1'}/api/data/v9.2"
    return emulator._json(200, {"@odata.context": f"{base}/$metadata#{ENTITY}.CreateMultipleResponse", "Ids": ids})


def update_multiple(emulator: DataverseEmulator, request: Request) -> Response:
    table, targets = _targets(emulator, request, "UpdateMultiple")
    keys: list[str] = []
    for target in targets:
        key = parse_guid(str(target.get(table.primary_id) or ""))
        if key is None:
            raise ApiError(400, "0x80040203", "Entity Id must be specified for Update")
        keys.append(key)
    repeated = [key for key, times in Counter(keys).items() if times > 1]
    if repeated:
        duplicate = repeated[0]
        raise ApiError(
            400,
            "0x80040237",
            f"Multiple records with the same primary key ({duplicate}) in Targets are not supported by UpdateMultiple.",
        )  # text unverified
    with emulator.data_lock:
        emulator.store.begin()
        try:
            for key, target in zip(keys, targets, strict=True):
                if key not in emulator.store.data(table.logical_name).rows:
                    raise ApiError(404, "0x80040217", f"{table.schema_name} With Ids = {key} Do Not Exist")
                body = {k: v for k, v in target.items() if k != table.primary_id}
                inner = _inner(
                    request, "PATCH", f"/api/data/v9.2/{table.entity_set_name}({key})", body, {"If-Match": "*"}
                )
                inner.params = {"entityset": table.entity_set_name, "key": key}
                emulator._patch(inner)
        except ApiError:
            emulator.store.rollback()
            raise
        emulator.store.commit()
        emulator.bulk_targets[f"UpdateMultiple {table.entity_set_name}"] += len(keys)
    return Response(204, b"", {"OData-Version": "4.0"})


def _targets(emulator: DataverseEmulator, request: Request, message: str) -> tuple[Table, list[dict[str, Any]]]:
    table = emulator._set_table(request.params["entityset"])
    if not supports(table):
        raise ApiError(
            400,
            "0x80040800",
            f"The '{message}' method does not support entities of type '{table.logical_name}'. "
            "MessageProcessorCache returned MessageProcessor.Empty.",
        )  # code unverified
    body = emulator._body(request)
    targets = body.get("Targets")
    if not isinstance(targets, list) or not targets:
        raise ApiError(400, "0x80060888", f"{message} needs a non-empty Targets collection.")  # text unverified
    expected = f"{ENTITY}.{table.logical_name}"
    for target in targets:
        if not isinstance(target, dict):
            raise ApiError(400, "0x80060888", "Each item of Targets must be a JSON object.")  # text unverified
        kind = target.get("@odata.type")
        if kind is None:
            raise ApiError(
                400,
                "0x80060888",
                f"An item of Targets has no '@odata.type'; set it to '{expected}' on every item.",
            )  # text unverified
        if kind != expected:
            raise ApiError(
                400,
                "0x80060888",
                f"All the records of {message} must be of the table '{table.logical_name}'; got '{kind}'.",
            )  # text unverified
    model = emulator.latency
    per_record = (
        model.create_multiple_record_seconds if message == "CreateMultiple" else model.update_multiple_record_seconds
    )
    if model.enabled and model.too_slow(len(targets) * per_record):
        raise ApiError(
            500,
            SQL_TIMEOUT,
            "Sql error: SQL timeout expired. CRM ErrorCode: -2147204783 Sql ErrorCode: -2146232060 Sql Number: -2",
        )
    return table, [{k: v for k, v in t.items() if k != "@odata.type"} for t in targets]


def _inner(outer: Request, method: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> Request:
    message = Message()
    for name in ("Host", "Authorization"):
        if outer.header(name):
            message[name] = outer.header(name)
    for name, value in headers.items():
        message[name] = value
    return Request(method, path, {}, message, json.dumps(body).encode())
