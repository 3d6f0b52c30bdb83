"""Fixtures shared by the whole suite: the emulators on loopback and a real Azurite."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from emulators.common import AdminClient, EmulatorServer


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


@pytest.fixture
def mailchimp_emulator(_mailchimp_server: EmulatorServer) -> Iterator[Running]:
    """A Mailchimp emulator with no state, no faults and zeroed call counts."""
    admin = AdminClient(_mailchimp_server.url)
    admin.reset()
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
