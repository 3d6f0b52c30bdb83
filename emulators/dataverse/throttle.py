"""Service protection limits per user: requests and execution time over a sliding window, and
concurrent requests, answered with 429 and ``Retry-After`` like the real service.

Times come from the emulator clock, so a test can fill the window and then advance the clock.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from . import errors
from .errors import ApiError


@dataclass
class Limits:
    requests: int = 6000
    window_seconds: int = 300
    execution_ms: int = 1_200_000
    concurrent: int = 52
    retry_after: str | None = None  # overrides the computed Retry-After (tests may use "0.1")

    def to_json(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "windowSeconds": self.window_seconds,
            "executionMs": self.execution_ms,
            "concurrent": self.concurrent,
            "retryAfter": self.retry_after,
        }


@dataclass
class _UserState:
    starts: deque[float] = field(default_factory=deque)  # admitted request times (epoch seconds)
    executions: deque[tuple[float, float]] = field(default_factory=deque)  # (end time, milliseconds)
    execution_total: float = 0.0
    in_flight: int = 0


class ServiceProtection:
    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now
        self.limits = Limits()
        self._users: dict[str, _UserState] = {}
        self._lock = threading.Lock()
        self.scale = 1.0  # the latency model's time scale: the window and the execution budget shrink with it

    def configure(self, spec: dict[str, object]) -> None:
        with self._lock:
            limits = self.limits
            for key, attr in (
                ("requests", "requests"),
                ("windowSeconds", "window_seconds"),
                ("executionMs", "execution_ms"),
                ("concurrent", "concurrent"),
            ):
                if key in spec:
                    value = int(spec[key])  # type: ignore[call-overload]
                    if value < 1:
                        raise ValueError(f"{key} must be at least 1")
                    setattr(limits, attr, value)
            if "retryAfter" in spec:
                value = spec["retryAfter"]
                if value is not None and float(value) < 0:  # type: ignore[arg-type]
                    raise ValueError("retryAfter must not be negative")
                limits.retry_after = None if value is None else str(value)

    def _retry_after(self, seconds: float) -> str:
        if self.limits.retry_after is not None:
            return self.limits.retry_after
        if self.scale != 1.0:  # scaled time: fractions of a second, or the client would wait real seconds
            return f"{max(seconds, 0.001):.3f}"
        return str(max(1, math.ceil(seconds)))

    def admit(self, user: str) -> ApiError | None:
        """None when the request may run (then ``release`` must follow), else the 429 to answer."""
        now = self.now().timestamp()
        limits = self.limits
        with self._lock:
            state = self._users.setdefault(user, _UserState())
            window = limits.window_seconds * self.scale
            horizon = now - window
            while state.starts and state.starts[0] <= horizon:
                state.starts.popleft()
            while state.executions and state.executions[0][0] <= horizon:
                state.execution_total -= state.executions.popleft()[1]
            if state.in_flight >= limits.concurrent:
                return errors.concurrency_limit(limits.concurrent, self._retry_after(self.scale))
            if len(state.starts) >= limits.requests:
                wait = state.starts[0] + window - now
                return errors.request_limit(limits.requests, limits.window_seconds, self._retry_after(wait))
            if state.execution_total >= limits.execution_ms * self.scale:
                wait = state.executions[0][0] + window - now
                return errors.execution_limit(limits.execution_ms, limits.window_seconds, self._retry_after(wait))
            state.starts.append(now)
            state.in_flight += 1
            return None

    def release(self, user: str, elapsed_ms: float) -> None:
        now = self.now().timestamp()
        with self._lock:
            state = self._users[user]
            state.in_flight -= 1
            state.executions.append((now, elapsed_ms))
            state.execution_total += elapsed_ms

    def reset(self) -> None:
        with self._lock:
            self.limits = Limits()
            self._users.clear()
            self.scale = 1.0
