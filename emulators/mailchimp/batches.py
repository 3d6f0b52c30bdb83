"""Batch operations (``/3.0/batches``): queued calls whose results come back as a gzipped tar of JSON files.

A batch moves one step per status read: ``pending`` when created, ``started`` at the first
``GET /batches/{id}`` (the operations run then, against the same store as direct calls), ``finished``
at the next one, which carries a ``response_body_url`` valid for ten minutes of the emulator's clock.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .audience import short_id
from .problems import field_error, invalid_resource
from .timestamps import format_epoch

BATCH_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
RESULTS_PER_FILE = 50
RESULT_URL_SECONDS = 600
PAGE = 1000

# (method, path, query, body text) -> (status code, response text)
Executor = Callable[[str, str, dict[str, str], str], tuple[int, str]]


@dataclass
class Batch:
    id: str
    api_key: str
    operations: list[dict[str, Any]]
    submitted_at: int
    status: str = "pending"
    completed_at: int | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    archive: bytes = b""

    @property
    def errored(self) -> int:
        return sum(1 for r in self.results if r["status_code"] >= 400)


def validate_operations(body: Any) -> list[dict[str, Any]]:
    """The operations of a POST /batches body, or Invalid Resource naming each bad field."""
    if not isinstance(body, dict) or "operations" not in body:
        raise invalid_resource(errors=[{"field": "", "message": "Required fields were not provided: operations"}])
    operations = body["operations"]
    if not isinstance(operations, list):
        raise field_error("operations", "Schema describes array, object found instead")
    errors: list[dict[str, str]] = []
    for position, op in enumerate(operations):
        where = f"operations.item:{position}"
        if not isinstance(op, dict):
            errors.append({"field": where, "message": "Schema describes object"})
            continue
        missing = [name for name in ("method", "path") if name not in op]
        if missing:
            errors.append({"field": where, "message": f"Required fields were not provided: {', '.join(missing)}"})
            continue
        if not isinstance(op["method"], str) or op["method"].upper() not in BATCH_METHODS:
            errors.append({"field": f"{where}.method", "message": f"Value must be one of: {', '.join(BATCH_METHODS)}"})
        if not isinstance(op["path"], str):
            errors.append({"field": f"{where}.path", "message": "Schema describes string"})
        if "body" in op and not isinstance(op["body"], str):
            errors.append(
                {
                    "field": f"{where}.body",
                    "message": f"Schema describes string, {type(op['body']).__name__} found instead",
                }
            )
        if "params" in op and not isinstance(op["params"], dict):
            errors.append({"field": f"{where}.params", "message": "Schema describes object"})
        if "operation_id" in op and not isinstance(op["operation_id"], str):
            errors.append({"field": f"{where}.operation_id", "message": "Schema describes string"})
    if errors:
        raise invalid_resource(errors=errors)
    return operations


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def run(batch: Batch, execute: Executor) -> None:
    """Run every operation; a GET on a collection without ``count`` pages through it, one result per page."""
    for op in batch.operations:
        method = op["method"].upper()
        path = op["path"] if op["path"].startswith("/") else "/" + op["path"]
        query = {k: _query_value(v) for k, v in (op.get("params") or {}).items()}
        operation_id = op.get("operation_id")
        paged = method == "GET" and "count" not in query
        offset = int(query.get("offset", 0) or 0)
        while True:
            if paged:
                query = {**query, "count": str(PAGE), "offset": str(offset)}
            status, text = execute(method, path, query, op.get("body", ""))
            batch.results.append({"status_code": status, "operation_id": operation_id, "response": text})
            if not paged or status >= 400:
                break
            try:
                total = json.loads(text).get("total_items")
            except (ValueError, AttributeError):
                total = None
            offset += PAGE
            if not isinstance(total, int) or offset >= total:
                break


def build_archive(batch: Batch) -> bytes:
    """The gzipped tar the real service puts behind response_body_url: JSON arrays of results."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for start in range(0, len(batch.results), RESULTS_PER_FILE):
            chunk = json.dumps(batch.results[start : start + RESULTS_PER_FILE]).encode()
            info = tarfile.TarInfo(f"{short_id(batch.id, start)}.json")
            info.size = len(chunk)
            info.mtime = batch.completed_at or 0
            archive.addfile(info, io.BytesIO(chunk))
    return buffer.getvalue()


def render(batch: Batch, base: str, now: int) -> dict[str, Any]:
    finished = batch.status in ("started", "finished")
    url = ""
    if batch.status == "finished":
        url = f"{base}/_batch-results/{batch.id}-response.tar.gz?Expires={now + RESULT_URL_SECONDS}"
    return {
        "id": batch.id,
        "status": batch.status,
        "total_operations": len(batch.results) if finished else len(batch.operations),
        "finished_operations": len(batch.results) if finished else 0,
        "errored_operations": batch.errored,
        "submitted_at": format_epoch(batch.submitted_at),
        "completed_at": format_epoch(batch.completed_at) if batch.status == "finished" else "",
        "response_body_url": url,
        "_links": [{"rel": "self", "href": f"{base}/3.0/batches/{batch.id}", "method": "GET"}],
    }
