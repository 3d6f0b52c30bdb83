"""What every loopback emulator shares: routing, an admin API, call counts and fault injection.

An emulator is an ``Emulator`` subclass that registers routes. ``EmulatorServer`` serves it
on 127.0.0.1 in a thread (tests) and ``main`` serves it as a subprocess
(``python -m emulators.<name> --port 0`` prints ``listening on port N``).

Admin API (never counted, never faulted), on every emulator:

    GET    /_admin/calls            {"calls": {"GET /3.0/lists/{list_id}/members": 3, ...}, "total": n}
    DELETE /_admin/calls            reset the counts
    POST   /_admin/faults           {"seed": 1, "rate": 0.1, "kinds": {"429": 1, "503": 1, "slow": 1},
                                     "slowSeconds": 0.2}  a seeded random share of faulty responses
    POST   /_admin/faults/next      {"count": 2, "pattern": "/members", "method": "PATCH", "status": 503}
                                     fail the next N requests whose path matches the regex
    DELETE /_admin/faults           no more faults
    POST   /_admin/reset            forget all state, counts, faults, the request log and the clock offset
    GET    /_admin/requests         the last 2,000 requests: method, route, path, query, body (JSON or text)
    DELETE /_admin/requests         empty that log
    GET    /_admin/clock            {"now": "...", "offsetSeconds": n}
    POST   /_admin/clock            {"advanceSeconds": n} moves the emulator's clock forward (never back)
    GET    /_admin/latency          the latency model (off by default): parameters, server time charged, 429s
    POST   /_admin/latency          {"enabled": true, "timeScale": 0.05, ...} switches it on and sets parameters
    DELETE /_admin/latency/counts   forget the server time charged so far
    POST   /_admin/seed, GET /_admin/state, and any other /_admin/... route the emulator adds
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests


class BadJsonError(ValueError):
    """The request body is not valid JSON."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    raw_query: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def json(self) -> Any:
        if not self.body:
            raise BadJsonError("empty body")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadJsonError(str(exc)) from exc


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls,
        status: int,
        obj: Any,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> Response:
        body = json.dumps(obj, separators=(",", ":")).encode()
        return cls(status, body, {"Content-Type": content_type, **(headers or {})})

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> Response:
        return cls(status, b"", dict(headers or {}))


Handler = Callable[[Request], Response]


@dataclass
class Route:
    method: str
    template: str
    regex: re.Pattern[str]
    handler: Handler

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


def _template_regex(template: str) -> re.Pattern[str]:
    """'/3.0/lists/{list_id}' -> a regex with one named group per {placeholder} (no slashes inside)."""
    parts = re.split(r"(\{[a-z_]+\})", template)
    pattern = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{pattern}$")


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, regex: str | None = None) -> None:
        compiled = re.compile(regex) if regex else _template_regex(template)
        self.routes.append(Route(method.upper(), template, compiled, handler))

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """The route for (method, path), its path params, and the methods the path allows."""
        allowed: list[str] = []
        for route in self.routes:
            found = route.regex.match(path)
            if not found:
                continue
            if route.method == method:
                return route, {k: v for k, v in found.groupdict().items() if v is not None}, []
            allowed.append(route.method)
        return None, {}, allowed


@dataclass
class FaultSpec:
    kind: str  # an HTTP status, optionally with a variant ("429", "503", "429-empty"), or "slow"
    status: int
    delay: float = 0.0

    @property
    def variant(self) -> str:
        return self.kind.partition("-")[2]


_FAULT_KIND = re.compile(r"^(slow|\d{3}(-[a-z]+)?)$")


@dataclass
class _FailNext:
    remaining: int
    pattern: re.Pattern[str]
    method: str | None
    status: int


class Faults:
    """Seeded random faults, plus "fail the next N requests matching a pattern"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.rate = 0.0
            self.kinds: dict[str, float] = {}
            self.slow_seconds = 0.2
            self.rng = random.Random(0)
            self.rules: list[_FailNext] = []
            self.injected: Counter[str] = Counter()

    def configure(self, spec: dict[str, Any]) -> None:
        rate = float(spec.get("rate", 0.0))
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        kinds = {str(k): float(v) for k, v in (spec.get("kinds") or {"503": 1}).items()}
        for kind in kinds:
            if not _FAULT_KIND.match(kind):
                raise ValueError(
                    f"unknown fault kind {kind!r}: use an HTTP status such as '429', "
                    "a status with a variant such as '429-empty', or 'slow'"
                )
        with self._lock:
            self.rate = rate
            self.kinds = kinds
            self.slow_seconds = float(spec.get("slowSeconds", 0.2))
            self.rng = random.Random(spec.get("seed", 0))

    def fail_next(self, spec: dict[str, Any]) -> None:
        rule = _FailNext(
            remaining=int(spec.get("count", 1)),
            pattern=re.compile(spec.get("pattern", ".*")),
            method=(spec.get("method") or None) and str(spec["method"]).upper(),
            status=int(spec.get("status", 503)),
        )
        with self._lock:
            self.rules.append(rule)

    def draw(self, request: Request) -> FaultSpec | None:
        with self._lock:
            for rule in self.rules:
                if rule.remaining > 0 and rule.pattern.search(request.path) and rule.method in (None, request.method):
                    rule.remaining -= 1
                    self.injected[str(rule.status)] += 1
                    return FaultSpec(str(rule.status), rule.status)
            self.rules = [r for r in self.rules if r.remaining > 0]
            if self.rate <= 0 or self.rng.random() >= self.rate:
                return None
            kinds, weights = zip(*self.kinds.items(), strict=True)
            kind = self.rng.choices(kinds, weights)[0]
            self.injected[kind] += 1
            if kind == "slow":
                return FaultSpec("slow", 200, self.slow_seconds)
            return FaultSpec(kind, int(kind[:3]))


class Clock:
    """The emulator's notion of now: real UTC time plus an offset that tests may advance."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += timedelta(seconds=seconds)


class Emulator:
    """Base of an emulator: subclasses register routes in ``__init__`` and override the hooks."""

    name = "emulator"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.router = Router()
        self.admin = Router()
        self.calls: Counter[str] = Counter()
        self.faults = Faults()
        self.clock = Clock()
        self.requests: deque[dict[str, Any]] = deque(maxlen=2000)
        self.latency: Any = None  # a LatencyBook (emulators/latency.py) where the emulator models server time
        self.admin.add("GET", "/_admin/calls", self._admin_calls)
        self.admin.add("GET", "/_admin/requests", self._admin_requests)
        self.admin.add("DELETE", "/_admin/requests", self._admin_clear_requests)
        self.admin.add("GET", "/_admin/clock", self._admin_clock)
        self.admin.add("POST", "/_admin/clock", self._admin_advance_clock)
        self.admin.add("DELETE", "/_admin/calls", self._admin_reset_calls)
        self.admin.add("POST", "/_admin/faults", self._admin_faults)
        self.admin.add("POST", "/_admin/faults/next", self._admin_fail_next)
        self.admin.add("DELETE", "/_admin/faults", self._admin_clear_faults)
        self.admin.add("POST", "/_admin/reset", self._admin_reset)
        self.admin.add("POST", "/_admin/seed", lambda r: self.admin_seed(r.json()))
        self.admin.add("GET", "/_admin/state", self.admin_state)
        self.admin.add("GET", "/_admin/latency", lambda r: self.latency_state())
        self.admin.add("POST", "/_admin/latency", lambda r: self.configure_latency(r.json()))
        self.admin.add("DELETE", "/_admin/latency/counts", lambda r: self.reset_latency_counts())

    # ---- hooks for subclasses -------------------------------------------------------------
    def reset(self) -> None:
        """Forget all service state (subclasses extend)."""

    def close(self) -> None:
        """Stop what the emulator runs beside its server (webhook workers); called when the server stops."""

    def admin_seed(self, body: Any) -> Response:
        return Response.json(404, {"error": "seeding not supported"})

    def admin_state(self, request: Request) -> Response:
        return Response.json(404, {"error": "state not supported"})

    def authenticate(self, request: Request) -> Response | None:
        """None when the caller may proceed, else the service's own 401/403 response."""
        return None

    def error(self, status: int, message: str, request: Request) -> Response:
        """An error in the service's own body shape."""
        return Response.json(status, {"error": message})

    def fault_response(self, fault: FaultSpec, request: Request) -> Response:
        return self.error(fault.status, HTTPStatus(fault.status).phrase, request)

    def configure_latency(self, spec: Any) -> Response:
        """Switches the emulator's latency model on or off and sets its parameters (``POST /_admin/latency``)."""
        if self.latency is None:
            return self._no_latency_model()
        if not isinstance(spec, dict):
            raise ValueError("expected a JSON object of latency parameters")
        self.latency.configure(spec)
        self.latency_configured()
        return Response.json(200, self.latency.to_json())

    def latency_configured(self) -> None:
        """The latency model was switched or its parameters changed (e.g. limits that follow its time scale)."""

    def latency_state(self) -> Response:
        """The latency model's parameters and the server time it charged so far (``GET /_admin/latency``)."""
        if self.latency is None:
            return self._no_latency_model()
        return Response.json(200, self.latency.to_json())

    def reset_latency_counts(self) -> Response:
        """Forgets the server time charged so far (``DELETE /_admin/latency/counts``)."""
        if self.latency is None:
            return self._no_latency_model()
        self.latency.reset_counts()
        return Response.empty(204)

    def _no_latency_model(self) -> Response:
        return Response.json(404, {"error": f"the {self.name} emulator has no latency model"})

    def dispatch(self, route: Route, request: Request) -> Response:
        """Calls the route's handler; subclasses wrap it (concurrency limits, throttling)."""
        return route.handler(request)

    # ---- request handling -----------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.path.startswith("/_admin/"):
            route, params, _ = self.admin.match(request.method, request.path)
            if route is None:
                return Response.json(404, {"error": f"no admin route {request.method} {request.path}"})
            request.params = params
            try:
                return route.handler(request)
            except (BadJsonError, ValueError, KeyError, TypeError) as exc:
                return Response.json(400, {"error": f"{type(exc).__name__}: {exc}"})
        route, params, allowed = self.router.match(request.method, request.path)
        if route is None:
            if allowed:
                return self.error(405, f"The requested method {request.method} is not allowed", request)
            return self.error(404, f"Resource not found for {request.path}", request)
        request.params = params
        with self.lock:
            self.calls[route.name] += 1
            self.requests.append(_logged(route, request))
        denied = self.authenticate(request)
        if denied is not None:
            return denied
        fault = self.faults.draw(request)
        if fault is not None:
            if fault.kind != "slow":
                return self.fault_response(fault, request)
            time.sleep(fault.delay)
        return self.dispatch(route, request)

    # ---- admin ----------------------------------------------------------------------------
    def _admin_calls(self, request: Request) -> Response:
        with self.lock:
            calls = dict(self.calls)
        return Response.json(
            200, {"calls": calls, "total": sum(calls.values()), "faultsInjected": dict(self.faults.injected)}
        )

    def _admin_reset_calls(self, request: Request) -> Response:
        with self.lock:
            self.calls.clear()
        return Response.empty(204)

    def _admin_faults(self, request: Request) -> Response:
        self.faults.configure(request.json())
        return Response.empty(204)

    def _admin_fail_next(self, request: Request) -> Response:
        self.faults.fail_next(request.json())
        return Response.empty(204)

    def _admin_clear_faults(self, request: Request) -> Response:
        self.faults.clear()
        return Response.empty(204)

    def _admin_reset(self, request: Request) -> Response:
        with self.lock:
            self.reset()
            self.calls.clear()
            self.requests.clear()
            self.clock = Clock()
        self.faults.clear()
        return Response.empty(204)

    def _admin_requests(self, request: Request) -> Response:
        with self.lock:
            return Response.json(200, {"requests": list(self.requests)})

    def _admin_clear_requests(self, request: Request) -> Response:
        with self.lock:
            self.requests.clear()
        return Response.empty(204)

    def _admin_clock(self, request: Request) -> Response:
        return Response.json(
            200, {"now": self.clock.now().isoformat(), "offsetSeconds": self.clock.offset.total_seconds()}
        )

    def _admin_advance_clock(self, request: Request) -> Response:
        self.clock.advance(float(request.json().get("advanceSeconds", 0)))
        return self._admin_clock(request)


def _logged(route: Route, request: Request) -> dict[str, Any]:
    body: Any = None
    if request.body:
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            body = request.body.decode("utf-8", "replace")
    return {
        "method": request.method,
        "route": route.template,
        "path": request.path,
        "query": request.query,
        "body": body,
    }


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    emulator: Emulator  # set on the per-server subclass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the emulators are quiet; counts are on /_admin/calls

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            raw_query=parts.query,
        )
        try:
            response = self.emulator.handle(request)
        except Exception as exc:  # a bug in the emulator: say so loudly, as a 500
            print(f"{self.emulator.name} emulator error on {self.command} {parts.path}: {exc!r}", file=sys.stderr)
            response = Response.json(500, {"error": f"emulator bug: {exc!r}"})
        head = [f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}"]
        # as every real server does, on the emulator's own clock (which tests may move forward)
        headers = {
            "Date": format_datetime(self.emulator.clock.now(), usegmt=True),
            "Content-Length": str(len(response.body)),
            **response.headers,
        }
        if response.status in (204, 304):
            headers.pop("Content-Length")
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 - stdlib names


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class EmulatorServer:
    """Serves an emulator on 127.0.0.1 in a background thread."""

    def __init__(self, emulator: Emulator, port: int = 0) -> None:
        handler = type("Handler", (_RequestHandler,), {"emulator": emulator})
        self.emulator = emulator
        self.httpd = _Server(("127.0.0.1", port), handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name=f"{self.emulator.name}-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.emulator.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(factory: Callable[[], Emulator], argv: list[str] | None = None) -> None:
    """``python -m emulators.<name> [--port N]``: serve until SIGTERM/SIGINT, printing the port first."""
    parser = argparse.ArgumentParser(description=f"Serve the {factory().name} emulator on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one")
    parser.add_argument(
        "--latency", choices=["off", "model"], default="off", help="model: answer after the service's server time"
    )
    parser.add_argument("--time-scale", type=float, help="with --latency model: multiply every modelled time by this")
    args = parser.parse_args(argv)
    emulator = factory()
    if args.latency == "model":
        emulator.configure_latency({"enabled": True, **({"timeScale": args.time_scale} if args.time_scale else {})})
    server = EmulatorServer(emulator, args.port)
    print(f"listening on port {server.port}", flush=True)
    # shutdown() waits for serve_forever() to return, so it must not run on the serving thread itself
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.httpd.shutdown, daemon=True).start())
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        server.emulator.close()


class AdminClient:
    """Drives an emulator's admin API over HTTP (tests, the demo and the benchmark)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.session.request(method, f"{self.base_url}/_admin/{path}", json=body, timeout=120)
        if response.status_code >= 400:
            raise RuntimeError(f"admin {method} {path} failed: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def seed(self, body: Any) -> Any:
        return self._call("POST", "seed", body)

    def state(self, **query: str) -> Any:
        suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
        return self._call("GET", "state" + suffix)

    def calls(self) -> dict[str, int]:
        return self._call("GET", "calls")["calls"]

    def reset_calls(self) -> None:
        self._call("DELETE", "calls")

    def faults(
        self, rate: float, kinds: dict[str, float] | None = None, seed: int = 0, slow_seconds: float = 0.2
    ) -> None:
        self._call(
            "POST", "faults", {"rate": rate, "kinds": kinds or {"503": 1}, "seed": seed, "slowSeconds": slow_seconds}
        )

    def fail_next(self, count: int, pattern: str = ".*", method: str | None = None, status: int = 503) -> None:
        self._call("POST", "faults/next", {"count": count, "pattern": pattern, "method": method, "status": status})

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def reset(self) -> None:
        self._call("POST", "reset")

    def requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "requests")["requests"]

    def clear_requests(self) -> None:
        self._call("DELETE", "requests")

    def advance_clock(self, seconds: float) -> str:
        return self._call("POST", "clock", {"advanceSeconds": seconds})["now"]

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Any other admin route of the emulator, e.g. ``call("POST", "campaigns/send", {...})``."""
        return self._call(method, path, body)
