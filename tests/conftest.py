"""Fixtures shared by the whole suite: the emulators on loopback and a real Azurite."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from emulators.common import AdminClient, EmulatorServer

TESTS = Path(__file__).resolve().parent
# Fixtures that start Azurite (a node process) or serve an emulator on loopback; anything built on them needs them too.
WORLD_FIXTURES = frozenset(
    {"azurite", "mailchimp_emulator", "dataverse_emulator", "_mailchimp_server", "_dataverse_server"}
)
# Whole folders or files that need the world without a fixture saying so: the emulators' own tests serve HTTP on
# loopback (one starts an emulator process), the benchmark runs the product as a subprocess, checkov and the Kusto
# parser (node) are subprocesses.
WORLD_PATHS = (("emulators",), ("bench",), ("infra", "test_checkov.py"), ("infra", "test_kql.py"))


def needs_the_world(item: pytest.Item) -> bool:
    if isinstance(item, pytest.Function) and WORLD_FIXTURES & set(item.fixturenames):
        return True
    parts = item.path.resolve().relative_to(TESTS).parts
    return any(parts[: len(prefix)] == prefix for prefix in WORLD_PATHS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test that needs Azurite, an emulator or a subprocess as `world`, so `-m "not world"` runs fast."""
    for item in items:
        if needs_the_world(item):
            item.add_marker(pytest.mark.world)


@dataclass
class Running:
    """An emulator served in a thread: its base URL, its admin client and the emulator object."""

    url: str
    admin: AdminClient
    server: EmulatorServer


@pytest.fixture(scope="session")
def _mailchimp_server() -> Iterator[EmulatorServer]:
    from emulators.mailchimp import MailchimpEmulator

    with EmulatorServer(MailchimpEmulator()) as server:
        yield server


@pytest.fixture(params=["documented", "strict"])
def mailchimp_compliance(request: pytest.FixtureRequest) -> str:
    """Runs a test under both compliance modes of the Mailchimp emulator: "documented" (the service: only the
    person's own unsubscribe and bounces block re-subscribing through the API) and "strict" (every unsubscribe
    does), so that a consent test shows the product keeps "never re-subscribe" itself, not the emulator for it."""
    return str(request.param)


@pytest.fixture
def mailchimp_emulator(_mailchimp_server: EmulatorServer, request: pytest.FixtureRequest) -> Iterator[Running]:
    """A Mailchimp emulator with no state, no faults and zeroed call counts, in the documented compliance mode
    unless the test asks for ``mailchimp_compliance``."""
    admin = AdminClient(_mailchimp_server.url)
    admin.reset()
    if "mailchimp_compliance" in request.fixturenames:
        admin.call("POST", "settings", {"compliance": request.getfixturevalue("mailchimp_compliance")})
    yield Running(_mailchimp_server.url, admin, _mailchimp_server)
    admin.reset()


@pytest.fixture(scope="session")
def _dataverse_server() -> Iterator[EmulatorServer]:
    from emulators.dataverse import DataverseEmulator

    with EmulatorServer(DataverseEmulator()) as server:
        yield server


@pytest.fixture
def dataverse_emulator(_dataverse_server: EmulatorServer) -> Iterator[Running]:
    """A Dataverse emulator with no state, no faults and zeroed call counts."""
    admin = AdminClient(_dataverse_server.url)
    admin.reset()
    yield Running(_dataverse_server.url, admin, _dataverse_server)
    admin.reset()


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """The connection string of a real Azurite started for this test session."""
    from emulators.azurite import Azurite

    with Azurite() as running:
        yield running.connection_string
