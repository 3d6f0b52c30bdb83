"""The erasure tests' world and the proof: every place the product writes, searched for an address."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared import cli
from shared.adapters.storage import Storage
from shared.rules.addresses import member_hash
from tests.sync_world import SyncWorld


def run_cli(world: SyncWorld, tmp_path: Path, *argv: str, **overrides: str) -> tuple[int, str]:
    """The command line as a person runs it, with the world's settings in a local.settings.json."""
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": world.env(**overrides)}))
    out = io.StringIO()
    code = cli.main(["--settings", str(settings), *argv], out)
    return code, out.getvalue()


def _texts(value: Any) -> Iterator[str]:
    """A stored value and every readable form hidden in it: bytes decoded, zlib inflated, base64 unwrapped."""
    raw = getattr(value, "value", value)
    if isinstance(raw, bytes):
        yield raw.decode("latin-1")
        with contextlib.suppress(zlib.error):
            yield from _texts(zlib.decompress(raw))
    elif isinstance(raw, str):
        yield raw
        try:
            decoded = base64.b64decode(raw, validate=True)
        except ValueError:
            return
        if decoded and decoded != raw.encode():
            yield from _texts(decoded)
    elif raw is not None:
        yield str(raw)


def _forms(email: str) -> list[str]:
    typed = {email, email.lower(), email.upper()}
    return [form.lower() for form in typed] + [json.dumps(form)[1:-1].lower() for form in typed]


def places_holding(storage: Storage, email: str) -> list[str]:
    """Every table row, queue message and product temp file holding the address (in any case, JSON-escaped,
    base64 or zlib-wrapped) or its member hash: "table/partition/row: address|hash"."""
    forms = _forms(email)
    hashed = member_hash(email)
    found: list[str] = []

    def look(where: str, value: Any) -> None:
        for text in _texts(value):
            lowered = text.lower()
            if any(form in lowered for form in forms):
                found.append(f"{where}: address")
            if hashed in lowered:
                found.append(f"{where}: hash")

    for table in storage.tables.list_tables():
        for row in storage.table(table.name).list_entities():
            for name, value in row.items():
                look(f"{table.name}/{row['PartitionKey']}/{row['RowKey']}/{name}", value)
    for queue in storage.queues.list_queues():
        for message in storage.queue(queue.name).peek_messages(max_messages=32):
            look(f"queue {queue.name}", message.content)
    for folder in Path(tempfile.gettempdir()).glob("cbr-*"):  # the scan's spill folders, this run's and others'
        try:
            for path in folder.rglob("*") if folder.is_dir() else [folder]:
                if path.is_file() and os.access(path, os.R_OK):
                    look(f"file {path}", path.read_bytes())
        except OSError:
            continue  # another process's scan finished and removed its folder meanwhile
    return sorted(set(found))
