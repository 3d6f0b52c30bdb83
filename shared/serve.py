"""`serve`: the app on loopback as the Functions host runs it, for development, tests and the demo.

The HTTP routes (POST /api/sync, GET /api/status, the webhook routes) call the same handlers of shared/app.py
the functions in functions/ call; one worker per queue drains it continuously with host.json's semantics (a
failed message is seen again after the visibility timeout, one that failed maxDequeueCount times moves to its
poison queue, whose handler keeps it); the timers fire on SYNC_SCHEDULE and SYNC_NOW_SCHEDULE. ``stop()`` (Ctrl-C
in the command) lets each worker finish the message in hand and closes the port.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from shared import app as engine
from shared import telemetry
from shared.adapters.storage import BATCHES_QUEUE, EVENTS_QUEUE, LINKS_QUEUE, poison
from shared.rules.schedule import ScheduleError, next_run
from shared.settings import SettingsError

log = logging.getLogger("consent_bridge.serve")
LEASE_SECONDS = 600  # a message in hand stays invisible this long (host.json's functionTimeout)
IDLE_POLL_MAX = 2.0  # host.json's maxPollingInterval: an idle queue is asked at least this often
IDLE_POLL_MIN = 0.05

Handler = Callable[[dict[str, Any], int], Any]


class Server:
    def __init__(
        self,
        ctx: engine.Context,
        *,
        port: int = 7071,
        max_dequeue_count: int = 5,
        retry_seconds: float = 30.0,
        timers: bool = True,
        say: Callable[[str], None] = print,
    ) -> None:
        self.ctx = ctx
        self.max_dequeue_count = max_dequeue_count
        self.retry_seconds = retry_seconds
        self.say = say
        self.stopping = threading.Event()
        self.http = ThreadingHTTPServer(("127.0.0.1", port), _route_handler(ctx))
        self.http.daemon_threads = True
        self.handlers: dict[str, Handler] = {
            LINKS_QUEUE: lambda m, _: engine.scan_link(ctx, m),
            BATCHES_QUEUE: lambda m, attempt: engine.reconcile_batch(ctx, m, attempt),
            EVENTS_QUEUE: lambda m, attempt: engine.handle_events(ctx, m, attempt),
            poison(LINKS_QUEUE): lambda m, _: engine.dead_letter_link(ctx, m),
            poison(BATCHES_QUEUE): lambda m, _: engine.dead_letter_batch(ctx, m),
            poison(EVENTS_QUEUE): lambda m, _: engine.dead_letter_event(ctx, m),
        }
        self.threads = [threading.Thread(target=self.http.serve_forever, name="http", daemon=True)]
        self.threads += [
            threading.Thread(target=self._work, args=(queue,), name=queue, daemon=True) for queue in self.handlers
        ]
        if timers:
            self.threads += [
                threading.Thread(target=self._timer, args=(name, schedule, tick), name=name, daemon=True)
                for name, schedule, tick in (
                    ("SYNC_SCHEDULE", ctx.settings.sync_schedule, self._plan),
                    ("SYNC_NOW_SCHEDULE", ctx.settings.sync_now_schedule, lambda: engine.sync_now(ctx)),
                )
            ]

    @property
    def url(self) -> str:
        host, port = self.http.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Server:
        self.ctx.storage.ensure()
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.http.shutdown()
        self.http.server_close()
        for thread in self.threads:
            thread.join(timeout=LEASE_SECONDS)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---- queues ------------------------------------------------------------------------------
    def _work(self, queue: str) -> None:
        storage = self.ctx.storage
        handler = self.handlers[queue]
        idle = IDLE_POLL_MIN
        while not self.stopping.is_set():
            try:
                messages = storage.receive(queue, visibility_timeout=LEASE_SECONDS, max_messages=1)
            except Exception as exc:  # storage unreachable for a moment: poll again later
                log.warning("%s: could not receive (%s)", queue, type(exc).__name__)
                messages = []
            if not messages:
                self.stopping.wait(idle)
                idle = min(IDLE_POLL_MAX, idle * 2)
                continue
            idle = IDLE_POLL_MIN
            for message in messages:
                self._handle(queue, handler, message)

    def _handle(self, queue: str, handler: Handler, message: Any) -> None:
        storage = self.ctx.storage
        attempt = message.dequeue_count or 1
        body = json.loads(message.content)
        try:
            handler(body, attempt)
        except Exception as exc:
            if attempt >= self.max_dequeue_count and not queue.endswith("-poison"):
                storage.send(poison(queue), body)
                storage.delete(queue, message)
                self.say(f"{queue}: message moved to {poison(queue)} after {attempt} attempts ({type(exc).__name__})")
            else:
                storage.queue(queue).update_message(message, visibility_timeout=int(self.retry_seconds))
                self.say(f"{queue}: attempt {attempt} failed ({type(exc).__name__}: {str(exc)[:200]}); retrying")
            return
        storage.delete(queue, message)

    # ---- timers ------------------------------------------------------------------------------
    def _timer(self, name: str, schedule: str, tick: Callable[[], Any]) -> None:
        while not self.stopping.is_set():
            try:
                due = next_run(schedule, datetime.now(UTC))
            except ScheduleError as exc:
                self.say(f"{name}: {exc}; the timer does not run")
                return
            if due is None or self.stopping.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
                return
            try:
                tick()
            except Exception as exc:
                self.say(f"{name}: the tick failed ({type(exc).__name__}: {str(exc)[:200]})")

    def _plan(self) -> None:
        for planned in engine.plan_sync(self.ctx, trigger=telemetry.TRIGGER_TIMER):
            self.say(f"timer: {planned.link}: " + (f"run {planned.run_id}" if planned.run_id else planned.skipped))


def _route_handler(ctx: engine.Context) -> type[BaseHTTPRequestHandler]:
    class Routes(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            log.debug(format, *args)

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = dict(self.headers.items())
            try:
                status, text, kind = _answer(ctx, method, parts.path.rstrip("/"), params, headers, body)
            except Exception as exc:  # the host answers 500 for an unhandled exception: so does serve
                log.exception("%s %s failed", method, parts.path)
                status, text, kind = 500, f"{type(exc).__name__}", "text/plain"
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Routes


def _answer(
    ctx: engine.Context, method: str, path: str, params: dict[str, str], headers: dict[str, str], body: bytes
) -> tuple[int, str, str]:
    if path == "/api/webhooks/mailchimp" and method in ("GET", "POST"):
        reply = engine.receive_mailchimp(ctx, method, params, headers, body)
        return reply.status, reply.text, "text/plain"
    if path == "/api/webhooks/dataverse" and method == "POST":
        reply = engine.receive_dataverse(ctx, headers, body)
        return reply.status, reply.text, "text/plain"
    if path == "/api/status" and method == "GET":
        return 200, json.dumps({"links": engine.link_statuses(ctx)}), "application/json"
    if path == "/api/sync" and method == "POST":
        asked = json.loads(body) if body else {}
        try:
            planned = engine.plan_sync(
                ctx, link_name=asked.get("link") or params.get("link"), trigger=telemetry.TRIGGER_HTTP
            )
        except SettingsError as exc:
            return 404, json.dumps({"error": str(exc)}), "application/json"
        runs = [{"link": p.link, "runId": p.run_id, "skipped": p.skipped or None} for p in planned]
        return 202, json.dumps({"runs": runs}), "application/json"
    return 404, "no such route", "text/plain"
