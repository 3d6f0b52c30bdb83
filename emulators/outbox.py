"""Outgoing webhook deliveries of an emulator: a queue served by worker threads, retries on a compressible
clock, seeded drops and duplicates, and a log that tests read.

Both emulators hand their deliveries to an ``Outbox``; the service's own rules (which answers are retried and
when, what a 410 does, what a failure leaves behind) come in as a ``DeliveryPolicy``. Deliveries never run in
the request that caused them. Only loopback URLs are contacted: a delivery to any other host is logged as
``not-sent``, so an emulator never reaches out of the machine.

Admin routes (``register`` adds them under the given prefix, e.g. ``/_admin/webhooks``):

    GET    <prefix>/deliveries   ?wait=<seconds> first waits until the queue is idle (nothing queued or in
                                 flight, retries included); ?state=&type= filter. -> {"deliveries": [{"id",
                                 "url", "state": pending | delivered | failed | dropped | disabled | not-sent,
                                 "duplicate", "attempts": [{"at", "status", "error", "elapsedMs"}], "body",
                                 ...the service's own fields}], "idle", "queued", "inFlight", "counts": {state: n}}
    POST   <prefix>/flush        {"timeoutSeconds": 30} waits until idle -> {"idle", "counts"}
    POST   <prefix>/faults       {"drop": 0.3, "duplicate": 0.1, "seed": 7}: the share of deliveries never sent
                                 and of deliveries sent twice, drawn from a generator seeded with ``seed`` in
                                 the order the changes happen (the same changes give the same faults)
    DELETE <prefix>/faults       no more faults
    GET    <prefix>/settings, POST <prefix>/settings  {"timeScale": 1.0, "timeoutSeconds": ..., "workers": 4}:
                                 timeScale multiplies every wait of the retry schedule (0.001 makes 75 minutes
                                 last 4.5 seconds); timeoutSeconds is how long one attempt waits for an answer

A reset (``clear``) drops what is queued and forgets the log and the faults; an attempt in flight finishes but
its outcome is discarded. ``close`` stops the workers.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from emulators.common import Request, Response, Router

STATES = ("pending", "delivered", "failed", "dropped", "disabled", "not-sent")
DEFAULT_WORKERS = 4
MAX_WORKERS = 32


@dataclass
class Delivery:
    """One event on its way to one URL; ``info`` holds the service's own fields shown by the admin route."""

    id: int
    target: str  # what a delivery belongs to (a webhook id, a service endpoint id): disabling stops them all
    url: str
    body: bytes
    headers: dict[str, str]
    info: dict[str, Any]
    duplicate: bool = False
    state: str = "pending"
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "state": self.state,
            "duplicate": self.duplicate,
            "attempts": list(self.attempts),
            "body": self.body.decode("utf-8", "replace"),
            **self.info,
        }


@dataclass
class Outcome:
    """The answer to one attempt: a status, or an error (timeout, refused connection) and no status."""

    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class DeliveryPolicy(Protocol):
    """What the service decides about its own deliveries."""

    default_timeout: float

    def sign(self, delivery: Delivery) -> dict[str, str]:
        """Headers computed at each attempt (a signature over the body with the attempt's timestamp)."""
        ...

    def retry_after(self, delivery: Delivery, outcome: Outcome) -> float | None:
        """Simulated seconds until the next attempt, or None when the delivery is over."""
        ...

    def settle(self, delivery: Delivery, outcome: Outcome) -> str:
        """The final state of a failed delivery that will not be tried again (it may disable the target);
        called under the outbox's lock."""
        ...

    def finished(self, delivery: Delivery, outcome: Outcome) -> None:
        """After the last attempt, outside the outbox's lock (the service may record the outcome)."""
        ...


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def utc_now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Outbox:
    """The delivery queue of one emulator; thread-safe; workers start with the first delivery."""

    def __init__(self, name: str, policy: DeliveryPolicy) -> None:
        self.name = name
        self.policy = policy
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._queue: list[tuple[float, int, Delivery]] = []
        self._in_flight = 0
        self._generation = 0
        self.deliveries: list[Delivery] = []
        self.disabled: set[str] = set()
        self._next_id = 1
        self.configure_defaults()
        self.clear_faults()

    # ---- settings and faults -------------------------------------------------------------------
    def configure_defaults(self) -> None:
        self.time_scale = 1.0
        self.timeout = self.policy.default_timeout
        self.workers = DEFAULT_WORKERS

    def settings(self) -> dict[str, Any]:
        return {"timeScale": self.time_scale, "timeoutSeconds": self.timeout, "workers": self.workers}

    def configure(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            if "timeScale" in body:
                scale = float(body["timeScale"])
                if not 0 <= scale <= 1000:
                    raise ValueError("timeScale must be between 0 and 1000")
                self.time_scale = scale
            if "timeoutSeconds" in body:
                timeout = float(body["timeoutSeconds"])
                if timeout <= 0:
                    raise ValueError("timeoutSeconds must be above 0")
                self.timeout = timeout
            if "workers" in body:
                workers = int(body["workers"])
                if not 1 <= workers <= MAX_WORKERS:
                    raise ValueError(f"workers must be between 1 and {MAX_WORKERS}")
                self.workers = workers
                if self._threads:
                    self._start_workers()
            self._cond.notify_all()
            return self.settings()

    def clear_faults(self) -> None:
        self.drop = 0.0
        self.duplicate = 0.0
        self.rng = random.Random(0)

    def set_faults(self, body: dict[str, Any]) -> None:
        drop, duplicate = float(body.get("drop", 0.0)), float(body.get("duplicate", 0.0))
        if not (0 <= drop <= 1 and 0 <= duplicate <= 1):
            raise ValueError("drop and duplicate are shares between 0 and 1")
        with self._cond:
            self.drop, self.duplicate = drop, duplicate
            self.rng = random.Random(body.get("seed", 0))

    # ---- queueing --------------------------------------------------------------------------------
    def send(
        self, target: str, url: str, body: bytes, headers: dict[str, str], info: dict[str, Any], delay: float = 0.0
    ) -> list[Delivery]:
        """Queue one event for one URL (``delay`` in simulated seconds); faults are drawn here, in order."""
        with self._cond:
            delivery = self._new(target, url, body, headers, info)
            copies = [delivery]
            if self.drop and self.rng.random() < self.drop:
                delivery.state = "dropped"
                return copies
            if self.duplicate and self.rng.random() < self.duplicate:
                twin = self._new(target, url, body, headers, info)
                twin.duplicate = True
                copies.append(twin)
            for copy in copies:
                if not is_loopback(url):
                    copy.state = "not-sent"
                else:
                    self._push(copy, delay + (1.0 if copy.duplicate else 0.0))
            return copies

    def _new(self, target: str, url: str, body: bytes, headers: dict[str, str], info: dict[str, Any]) -> Delivery:
        delivery = Delivery(self._next_id, target, url, body, dict(headers), dict(info))
        self._next_id += 1
        self.deliveries.append(delivery)
        return delivery

    def _push(self, delivery: Delivery, simulated_delay: float) -> None:
        due = time.monotonic() + max(0.0, simulated_delay) * self.time_scale
        heapq.heappush(self._queue, (due, delivery.id, delivery))
        if not self._threads:
            self._start_workers()
        self._cond.notify()

    def _start_workers(self) -> None:
        self._stopped = False
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self.workers:
            thread = threading.Thread(target=self._work, name=f"{self.name}-webhooks-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    # ---- the workers -----------------------------------------------------------------------------
    def _work(self) -> None:
        session = requests.Session()
        try:
            while True:
                taken = self._take()
                if taken is None:
                    return
                delivery, generation = taken
                outcome = self._attempt(session, delivery)
                self._record(delivery, generation, outcome)
        finally:
            session.close()

    def _take(self) -> tuple[Delivery, int] | None:
        with self._cond:
            while True:
                if self._stopped or self._surplus_worker():
                    return None
                if self._queue:
                    due, _, delivery = self._queue[0]
                    wait = due - time.monotonic()
                    if wait <= 0:
                        heapq.heappop(self._queue)
                        if delivery.target in self.disabled:
                            delivery.state = "disabled"
                            continue
                        self._in_flight += 1
                        return delivery, self._generation
                    self._cond.wait(min(wait, 1.0))
                else:
                    self._cond.wait(1.0)

    def _surplus_worker(self) -> bool:
        """A worker beyond the configured count leaves (the setting went down)."""
        current = threading.current_thread()
        alive = [t for t in self._threads if t.is_alive()]
        if len(alive) > self.workers and current in alive[self.workers :]:
            self._threads.remove(current)
            return True
        return False

    def _attempt(self, session: requests.Session, delivery: Delivery) -> Outcome:
        headers = {**delivery.headers, **self.policy.sign(delivery)}
        started = time.monotonic()
        at = utc_now_text()
        try:
            response = session.post(delivery.url, data=delivery.body, headers=headers, timeout=self.timeout)
            outcome = Outcome(response.status_code)
        except requests.Timeout:
            outcome = Outcome(None, "timeout")
        except requests.RequestException as exc:
            outcome = Outcome(None, type(exc).__name__)
        elapsed = int((time.monotonic() - started) * 1000)
        delivery.attempts.append({"at": at, "status": outcome.status, "error": outcome.error, "elapsedMs": elapsed})
        return outcome

    def _record(self, delivery: Delivery, generation: int, outcome: Outcome) -> None:
        final = False
        with self._cond:
            if generation == self._generation:  # else a reset happened while this attempt was in flight
                if outcome.ok:
                    delivery.state, final = "delivered", True
                else:
                    delay = self.policy.retry_after(delivery, outcome)
                    if delay is not None:
                        self._push(delivery, delay)
                    else:
                        delivery.state, final = self.policy.settle(delivery, outcome), True
            if not final:
                self._in_flight -= 1
                self._cond.notify_all()
                return
        try:
            self.policy.finished(delivery, outcome)
        finally:
            with self._cond:
                self._in_flight -= 1  # idle only once the outcome is recorded
                self._cond.notify_all()

    # ---- what tests ask ---------------------------------------------------------------------------
    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def disable(self, target: str) -> None:
        """Stops every later attempt for ``target`` (called by the policy, under the queue's lock)."""
        self.disabled.add(target)

    def view(self, state: str | None = None, kind: str | None = None) -> dict[str, Any]:
        with self._cond:
            chosen = [
                d.view()
                for d in self.deliveries
                if (state is None or d.state == state) and (kind is None or d.info.get("type") == kind)
            ]
            counts = Counter(d.state for d in self.deliveries)
            return {
                "deliveries": chosen,
                "idle": not self._queue and not self._in_flight,
                "queued": len(self._queue),
                "inFlight": self._in_flight,
                "counts": dict(counts),
            }

    def forget(self, keep: Callable[[Delivery], bool]) -> None:
        """Drops queued deliveries that ``keep`` refuses (their audience or endpoint is gone)."""
        with self._cond:
            gone = [item for item in self._queue if not keep(item[2])]
            for _, _, delivery in gone:
                delivery.state = "disabled"
            self._queue = [item for item in self._queue if keep(item[2])]
            heapq.heapify(self._queue)
            self._cond.notify_all()

    def clear(self) -> None:
        """A reset: nothing queued, no log, no faults, default settings; workers stay for the next delivery."""
        with self._cond:
            self._queue.clear()
            self._generation += 1
            self.deliveries = []
            self.disabled = set()
            self._next_id = 1
            self.clear_faults()
            self.configure_defaults()
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=self.timeout + 1)

    # ---- admin routes -----------------------------------------------------------------------------
    def register(self, router: Router, prefix: str) -> None:
        router.add("GET", f"{prefix}/deliveries", self._admin_deliveries)
        router.add("POST", f"{prefix}/flush", self._admin_flush)
        router.add("POST", f"{prefix}/faults", self._admin_set_faults)
        router.add("DELETE", f"{prefix}/faults", self._admin_clear_faults)
        router.add("GET", f"{prefix}/settings", lambda r: Response.json(200, self.settings()))
        router.add("POST", f"{prefix}/settings", lambda r: Response.json(200, self.configure(_object(r))))

    def _admin_deliveries(self, request: Request) -> Response:
        wait = request.arg("wait")
        if wait:
            self.wait_idle(float(wait))
        return Response.json(200, self.view(request.arg("state"), request.arg("type")))

    def _admin_flush(self, request: Request) -> Response:
        body = _object(request) if request.body else {}
        idle = self.wait_idle(float(body.get("timeoutSeconds", 30)))
        view = self.view()
        return Response.json(200, {"idle": idle, "counts": view["counts"]})

    def _admin_set_faults(self, request: Request) -> Response:
        self.set_faults(_object(request))
        return Response.empty(204)

    def _admin_clear_faults(self, request: Request) -> Response:
        with self._cond:
            self.clear_faults()
        return Response.empty(204)


def _object(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise ValueError("the body is a JSON object")
    return body
