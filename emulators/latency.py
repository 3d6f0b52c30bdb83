"""What both emulators' latency models share: parameters set through the admin API, and the book of server time
charged by kind of request and of 429s answered (``GET /_admin/latency``)."""

from __future__ import annotations

import threading
from dataclasses import fields
from typing import Any


class LatencyBook:
    """A dataclass mixin: ``enabled``, ``time_scale`` and the model's figures are its fields."""

    enabled: bool
    time_scale: float

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.server_seconds: dict[str, float] = {}
        self.requests: dict[str, int] = {}
        self.throttled = 0

    def to_json(self) -> dict[str, Any]:
        settings = {camel(f.name): getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        with self._lock:
            return {
                **settings,
                "serverSeconds": {k: round(v, 6) for k, v in self.server_seconds.items()},
                "totalServerSeconds": round(sum(self.server_seconds.values()), 6),
                "requests": dict(self.requests),
                "throttled": self.throttled,
            }

    def configure(self, spec: dict[str, Any]) -> None:
        known = {camel(f.name): f for f in fields(self)}  # type: ignore[arg-type]
        for key, value in spec.items():
            if key not in known:
                raise ValueError(f"unknown latency parameter {key!r}: use one of {', '.join(sorted(known))}")
            field = known[key]
            if field.name == "enabled":
                self.enabled = bool(value)
                continue
            number = int(value) if field.type in (int, "int") else float(value)
            if number < 0 or (number == 0 and field.name in ("time_scale", "dop_hint")):
                raise ValueError(f"{key} must be positive")
            setattr(self, field.name, number)

    def reset_counts(self) -> None:
        with self._lock:
            self.server_seconds.clear()
            self.requests.clear()
            self.throttled = 0

    def note_throttled(self) -> None:
        with self._lock:
            self.throttled += 1

    def charge(self, kind: str, seconds: float) -> float:
        """Books ``seconds`` of server time to ``kind`` and returns them."""
        if seconds <= 0:
            return 0.0
        with self._lock:
            self.server_seconds[kind] = self.server_seconds.get(kind, 0.0) + seconds
            self.requests[kind] = self.requests.get(kind, 0) + 1
        return seconds


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
