"""A sync world with the real-time path configured: a secret, a loopback base URL, and `serve` on it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from shared.app import Context
from shared.features.realtime.registry import PARTITION
from shared.serve import Server
from tests.sync_world import SyncWorld

SECRET = "test-webhook-secret-0123456789abcdefghij"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def realtime_world(mailchimp: Any, dataverse: Any, azurite: str, **kwargs: Any) -> SyncWorld:
    port = free_port()
    overrides = {
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "WEBHOOK_SECRET": SECRET,
        "SYNC_SCHEDULE": "0 0 0 1 1 *",
    }
    world = SyncWorld(mailchimp, dataverse, azurite, overrides={**overrides, **kwargs.pop("overrides", {})}, **kwargs)
    storage = world.context().storage
    for row in list(storage.query("SyncState", "PartitionKey eq @p", {"p": PARTITION})):
        storage.table("SyncState").delete_entity(PARTITION, row["RowKey"])  # registrations are per storage account
    return world


def delivering_world(mailchimp: Any, dataverse: Any, azurite: str) -> SyncWorld:
    """A real-time world whose emulators deliver their webhooks at once (retries compressed too)."""
    world = realtime_world(mailchimp, dataverse, azurite, tag=None)
    for admin in (mailchimp.admin, dataverse.admin):
        admin.call("POST", "webhooks/settings", {"timeScale": 0.001})
    return world


def serve(world: SyncWorld, ctx: Context | None = None) -> Server:
    port = int(world.env()["PUBLIC_BASE_URL"].rsplit(":", 1)[1])
    return Server(ctx or world.context(), port=port, retry_seconds=1, timers=False, say=lambda _: None)


def wait_for(check: Callable[[], Any], seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
