"""What tests of the Dataverse writes share: seeded contacts, and the writes each ``$batch`` request carried, read
back from the emulator's request log, with the change set each one travelled in."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from emulators.dataverse import batch

API = "/api/data/v9.2"


def contacts_seeded(admin: Any, count: int) -> list[str]:
    """The ids of ``count`` new contacts with last names L0, L1, ..."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    admin.seed({"contacts": [{"contactid": i, "lastname": f"L{n}"} for n, i in enumerate(ids)]})
    return ids


@dataclass(frozen=True)
class Sent:
    """One request inside a ``$batch``: which ``$batch`` (in the order received), which part of it (a change set
    or a loose request), and the request itself."""

    request: int
    part: int
    in_change_set: bool
    method: str
    url: str
    body: dict[str, Any]

    @property
    def change_set(self) -> tuple[int, int] | None:
        """Where the request travelled atomically: its ``$batch`` and change set (None: on its own)."""
        return (self.request, self.part) if self.in_change_set else None


def sent_in_batches(admin: Any) -> list[Sent]:
    """Every request the Dataverse emulator received inside a ``$batch`` since its request log was emptied."""
    found: list[Sent] = []
    received = [r for r in admin.requests() if r["route"].endswith("$batch") and not r.get("inBatch")]
    for number, request in enumerate(received):
        body = str(request["body"])
        boundary = body.split("\r\n", 1)[0].removeprefix("--")
        for position, item in enumerate(batch.parse(body.encode(), f"multipart/mixed; boundary={boundary}")):
            grouped = isinstance(item, batch.ChangeSet)
            for operation in item.operations if isinstance(item, batch.ChangeSet) else [item]:
                content = json.loads(operation.body) if operation.body.strip() else {}
                found.append(Sent(number, position, grouped, operation.method, operation.url, content))
    return found
