"""Starts the pinned Azurite (npm, from package-lock.json) on free loopback ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"Azurite did not listen on port {port} in time")


class Azurite:
    """``with Azurite() as azurite: azurite.connection_string``; stops the process on exit."""

    def __init__(self) -> None:
        binary = ROOT / "node_modules" / ".bin" / "azurite"
        if not binary.exists():
            raise RuntimeError("Azurite is not installed: run `npm ci` in the repository root")
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir = ""
        self.ports = {"blob": 0, "queue": 0, "table": 0}

    @property
    def connection_string(self) -> str:
        host = "http://127.0.0.1"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={host}:{self.ports['blob']}/{ACCOUNT};"
            f"QueueEndpoint={host}:{self.ports['queue']}/{ACCOUNT};"
            f"TableEndpoint={host}:{self.ports['table']}/{ACCOUNT};"
        )

    def start(self) -> Azurite:
        self.ports = {name: _free_port() for name in self.ports}
        self.workdir = tempfile.mkdtemp(prefix="azurite-")  # the debug log and anything Azurite writes
        self.process = subprocess.Popen(  # noqa: S603 - fixed local binary
            [
                str(self.binary),
                "--silent",
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableProductStyleUrl",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.ports["blob"]),
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                str(self.ports["queue"]),
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                str(self.ports["table"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 30
        try:
            for port in self.ports.values():
                _wait_for(port, deadline)
        except RuntimeError:
            code = self.process.poll()
            self.stop()
            raise RuntimeError(f"Azurite failed to start (exit code {code}); run it by hand to see why") from None
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.process.kill()  # in-memory state: nothing to flush
                self.process.wait(timeout=5)
        self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
