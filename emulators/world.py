"""The local world as separate processes: Azurite and both emulators, for the demo and the benchmark.

Each emulator runs in its own Python process (``python -m emulators.<name> --port 0``), so the sync
being measured shares neither its memory nor its interpreter lock with them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from emulators.azurite import Azurite
from emulators.common import AdminClient

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "0123456789abcdef0123456789abcdef-us21"  # the emulator accepts any well-formed key


class EmulatorProcess:
    def __init__(self, module: str) -> None:
        self.module = module
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> EmulatorProcess:
        self.process = subprocess.Popen(  # noqa: S603 - our own module, same interpreter
            [sys.executable, "-m", self.module, "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on port "):
            self.stop()
            raise RuntimeError(f"{self.module} did not start (said {line!r})")
        self.url = f"http://127.0.0.1:{int(line.rsplit(' ', 1)[1])}"
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


class LocalWorld:
    """``with LocalWorld() as world: world.settings_env(links)``; everything stops on exit."""

    def __init__(self) -> None:
        self.azurite = Azurite()
        self.mailchimp = EmulatorProcess("emulators.mailchimp")
        self.dataverse = EmulatorProcess("emulators.dataverse")

    def __enter__(self) -> LocalWorld:
        try:
            self.azurite.start()
            self.mailchimp.start()
            self.dataverse.start()
        except BaseException:
            self.__exit__()
            raise
        self.mailchimp_admin = AdminClient(self.mailchimp.url)
        self.dataverse_admin = AdminClient(self.dataverse.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.dataverse.stop()
        self.mailchimp.stop()
        self.azurite.stop()

    def settings_env(self, links: list[dict[str, Any]], **overrides: str) -> dict[str, str]:
        env = {
            "AzureWebJobsStorage": self.azurite.connection_string,
            "MAILCHIMP_API_KEY": API_KEY,
            "MAILCHIMP_BASE_URL": f"{self.mailchimp.url}/3.0",
            "DATAVERSE_URL": self.dataverse.url,
            "SYNC_LINKS": json.dumps(links),
        }
        env.update(overrides)
        return env
