"""One measured sync, in its own process: ``python -m bench.runner --out result.json``.

Runs ``shared.cli.run_sync`` with the settings in the environment, exactly as ``python -m shared.cli
sync`` does, and writes what only this process can see: its own peak RSS (VmHWM: not ``ru_maxrss``,
which a child inherits from its parent), its CPU time, the wall time of the sync, and every storage
request it sent, counted by a transport that wraps the Azure SDK's default one (the requests themselves
are unchanged).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import re
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from azure.core.pipeline.transport import RequestsTransport

# an entity key, a message id or a pop receipt in a storage path becomes a placeholder
_ENTITY_KEY = re.compile(r"\(PartitionKey=.*\)$")
_MESSAGE_ID = re.compile(r"/messages/[^/]+$")


class CountingTransport(RequestsTransport):
    """The SDK's requests transport, counting each request (retries included) by operation."""

    def __init__(self, service: str, calls: Counter[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.calls = calls

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.calls[operation(self.service, request.method, request.url)] += 1
        return super().send(request, **kwargs)


def operation(service: str, method: str, url: str) -> str:
    """'table GET IdentityMap()', 'table POST $batch', 'queue GET sync-batches/messages', ..."""
    path = url.split("?", 1)[0].split("://", 1)[-1].split("/", 2)[-1]  # after host and account
    path = _MESSAGE_ID.sub("/messages/{id}", _ENTITY_KEY.sub("(entity)", path))
    return f"{service} {method} {path}"


def counting_storage(settings: Any, calls: Counter[str]) -> Any:
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    from shared.adapters.storage import Storage

    storage = Storage(settings)
    if settings.connection_string:  # the benchmark always runs on Azurite
        storage.tables = TableServiceClient.from_connection_string(
            settings.connection_string, transport=CountingTransport("table", calls)
        )
        storage.queues = QueueServiceClient.from_connection_string(
            settings.connection_string, transport=CountingTransport("queue", calls)
        )
    return storage


def peak_rss_kb(usage: resource.struct_rusage) -> int:
    """This process's own peak RSS. ``ru_maxrss`` survives exec, so a process started by a large parent reports
    the parent's size; VmHWM belongs to the address space this process runs in."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])  # kB
    except OSError:
        pass
    return int(usage.ru_maxrss)  # kilobytes on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runner", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the result (JSON)")
    parser.add_argument("--profile", help="also write cProfile stats of the sync to this file")
    parser.add_argument("--workers", type=int, default=1, help="queue handlers at once (sync --workers)")
    args = parser.parse_args(argv)

    import os

    from shared.adapters.dataverse import Dataverse
    from shared.adapters.mailchimp import Mailchimp
    from shared.app import Context
    from shared.cli import run_sync
    from shared.settings import load_settings

    settings = load_settings(dict(os.environ))
    calls: Counter[str] = Counter()
    ctx = Context(
        settings,
        counting_storage(settings.storage, calls),
        Mailchimp.from_settings(settings),
        Dataverse.from_settings(settings),
    )
    summary = io.StringIO()
    profiler = cProfile.Profile() if args.profile else None
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    code = run_sync(ctx, summary, progress=lambda text: print(text, file=sys.stderr, flush=True), workers=args.workers)
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    if profiler:
        profiler.dump_stats(args.profile)
    result = {
        "exit_code": code,
        "wall_seconds": wall,
        "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_rss_kb": peak_rss_kb(after),
        "storage_calls": dict(calls),
        "summary": summary.getvalue(),
    }
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
