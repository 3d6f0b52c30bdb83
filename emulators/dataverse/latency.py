"""The Dataverse latency model: simulated server time per request, so a run on the emulator waits as it would
on a real environment (off by default).

Every figure is a parameter (``POST /_admin/latency``, or ``--latency model`` on the command line) and
counts in *model seconds*; ``timeScale`` multiplies every sleep, and the service-protection window and
execution budget with it, so a run can go faster than the real service while every ratio stays the same.
The time is slept while the request counts as in flight, so it is charged against the 52 concurrent
requests and the execution-time budget exactly as the service charges it.

Defaults and their sources:

- ``singleWriteSeconds`` 0.12: one create, update or delete sent on its own. Microsoft's bulk operations
  sample (microsoft/PowerApps-Samples, dataverse/orgsvc/CSharp-NETCore/BulkOperations) updated 100 rows one
  by one in 12 s (created them in 10 s).
- ``batchOperationSeconds`` 0.04: one write inside ``$batch``; the same sample's ExecuteMultiple took 4 s for
  100 (``$batch`` is its Web API form). The requests of a ``$batch`` run one after another ("performed
  sequentially in the order provided", optimize-performance-create-update.md), so a batch costs their sum.
- ``updateMultipleRecordSeconds`` 0.03 and ``createMultipleRecordSeconds`` 0.01: per target of
  ``UpdateMultiple`` (100 in 3 s) and ``CreateMultiple`` (100 in 1 s) in that sample.
- ``readRequestSeconds`` 0.05 and ``readRowSeconds`` 0.0002: a query, plus per row returned (a 5,000-row page
  about 1 s). No published figure; assumptions to replace with a measured environment's numbers.
- ``dopHint`` 4: the ``x-ms-dop-hint`` header on every answer, the degree of parallelism the service
  recommends; it "varies from environment to environment" (send-parallel-requests.md); 4 is the value the
  planning note assumes.
- ``sqlTimeoutSeconds`` 120: a bulk message whose modelled time exceeds it fails as a SQL timeout, the error
  bulk-operations.md gives for a batch that is too large ("reduce the batch size of your request").

Service protection (52 concurrent, 6,000 requests and 1,200,000 ms of execution per 300 s) stays in
``throttle.py``; this model only decides how long each request takes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from emulators.common import Request, Response
from emulators.latency import LatencyBook


@dataclass
class LatencyModel(LatencyBook):
    enabled: bool = False
    time_scale: float = 1.0
    single_write_seconds: float = 0.12
    batch_operation_seconds: float = 0.04
    update_multiple_record_seconds: float = 0.03
    create_multiple_record_seconds: float = 0.01
    read_request_seconds: float = 0.05
    read_row_seconds: float = 0.0002
    dop_hint: int = 4
    sql_timeout_seconds: float = 120.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._local = threading.local()

    # ---- what a request costs -------------------------------------------------------------------
    def before(self, method: str, route: str, targets: int = 0) -> float:
        """Model seconds spent before the request's writes are applied: a bulk message's transaction and
        a single write (a ``$batch`` is charged part by part, see ``after``)."""
        if route.endswith(".CreateMultiple"):
            return self.charge("CreateMultiple", targets * self.create_multiple_record_seconds)
        if route.endswith(".UpdateMultiple"):
            return self.charge("UpdateMultiple", targets * self.update_multiple_record_seconds)
        if method in ("POST", "PATCH", "PUT", "DELETE") and not route.endswith("/$batch"):
            return self.charge("single", self.single_write_seconds)
        return 0.0

    def after(self, method: str, route: str, answer: bytes) -> float:
        """Model seconds spent producing the answer: a read's rows, and the parts a ``$batch`` ran in turn."""
        if route.endswith("/$batch"):
            parts = getattr(self._local, "parts", None) or []
            self._local.parts = []
            seconds = sum(
                self.read_request_seconds if part == "GET" else self.batch_operation_seconds for part in parts
            )
            return self.charge("$batch", seconds)
        if method == "GET":
            rows = max(1, answer.count(b'"@odata.etag"'))
            return self.charge("read", self.read_request_seconds + rows * self.read_row_seconds)
        return 0.0

    def note_part(self, method: str) -> None:
        """One request of the ``$batch`` this thread is running was executed."""
        if not hasattr(self._local, "parts"):
            self._local.parts = []
        self._local.parts.append(method.upper())

    def start_batch(self) -> None:
        self._local.parts = []

    def too_slow(self, seconds: float) -> bool:
        return seconds > self.sql_timeout_seconds

    def headers(self) -> dict[str, str]:
        return {"x-ms-dop-hint": str(self.dop_hint)} if self.enabled else {}


def targets_of(request: Request) -> int:
    """How many records a bulk message names (0 when its body is not one; the handler says why)."""
    try:
        targets = json.loads(request.body).get("Targets")
    except (ValueError, AttributeError):
        return 0
    return len(targets) if isinstance(targets, list) else 0


def serve(model: LatencyModel, route: str, request: Request, handler: Callable[[Request], Response]) -> Response:
    """Runs ``handler`` inside the modelled server time: the bulk message's or single write's time before its
    writes are applied (they land when the answer goes out, as a transaction commits at its end), a read's or
    a ``$batch``'s after."""
    bulk = route.endswith(("Multiple",))
    before = model.before(request.method, route, targets_of(request) if bulk else 0)
    if before:
        time.sleep(before * model.time_scale)
    if route.endswith("/$batch"):
        model.start_batch()
    response = handler(request)
    after = model.after(request.method, route, response.body)
    if after:
        time.sleep(after * model.time_scale)
    response.headers.update(model.headers())
    return response
