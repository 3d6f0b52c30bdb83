"""The cap on concurrent Mailchimp requests holds across instances (separate limiter objects, one table)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.adapters.limiter import ConnectionSlots
from shared.adapters.mailchimp import Mailchimp, MailchimpError
from shared.adapters.storage import Storage
from shared.settings import StorageSettings

KEY = "0123456789abcdef0123456789abcdef-us21"


def instances(running, azurite, count: int, *, shared: bool) -> list[Mailchimp]:
    storage = Storage(StorageSettings(connection_string=azurite))
    storage.ensure()
    adapters = []
    for _ in range(count):
        adapter = Mailchimp(KEY, f"{running.url}/3.0", max_connections=8, max_attempts=1)
        if shared:
            adapter.use_shared_slot(ConnectionSlots(storage, 2).slot)  # each instance has its own limiter object
        adapters.append(adapter)
    return adapters


def burst(adapters: list[Mailchimp]) -> list[BaseException | None]:
    def ping(index: int) -> BaseException | None:
        try:
            adapters[index % len(adapters)].ping()
        except MailchimpError as exc:
            return exc
        return None

    with ThreadPoolExecutor(12) as pool:
        return list(pool.map(ping, range(12)))


@pytest.fixture
def strict(mailchimp_emulator):
    # the emulator refuses a third request in flight, and each request takes a while
    mailchimp_emulator.admin.call("POST", "settings", {"concurrencyLimit": 2, "latencySeconds": 0.1})
    return mailchimp_emulator


def test_three_instances_never_exceed_the_shared_cap(strict, azurite):
    outcomes = burst(instances(strict, azurite, 3, shared=True))
    assert outcomes == [None] * 12
    assert strict.admin.calls() == {"GET /3.0/ping": 12}


def test_without_the_shared_cap_the_instances_overrun_mailchimp(strict, azurite):
    outcomes = burst(instances(strict, azurite, 3, shared=False))
    assert any(isinstance(o, MailchimpError) and o.status == 429 for o in outcomes)


def test_a_slot_whose_lease_ran_out_is_taken_over(azurite):
    storage = Storage(StorageSettings(connection_string=azurite))
    storage.ensure()
    stuck = ConnectionSlots(storage, 1, lease_seconds=0.2)
    waiting = ConnectionSlots(storage, 1, max_wait_seconds=30)
    holder = stuck._acquire()  # a request that timed out on our side and never came back
    with waiting.slot():
        assert waiting.waited_seconds > 0
    stuck._release(*holder)  # too late: the slot was given away, and releasing it changes nothing


def test_a_request_that_timed_out_keeps_its_slot_until_the_lease_ends(mailchimp_emulator, azurite):
    from shared.adapters.limiter import PARTITION, SlotsBusy

    storage = Storage(StorageSettings(connection_string=azurite))
    storage.ensure()
    for row in storage.table("SyncState").query_entities("PartitionKey eq @p", parameters={"p": PARTITION}):
        storage.table("SyncState").delete_entity(PARTITION, row["RowKey"])
    mailchimp_emulator.admin.call("POST", "settings", {"latencySeconds": 0.5})
    impatient = Mailchimp(KEY, f"{mailchimp_emulator.url}/3.0", timeout=0.2, max_attempts=1)
    impatient.use_shared_slot(ConnectionSlots(storage, 1).slot)
    with pytest.raises(MailchimpError):
        impatient.ping()
    with (
        pytest.raises(SlotsBusy, match="MAILCHIMP_MAX_CONNECTIONS"),
        ConnectionSlots(storage, 1, max_wait_seconds=0.3).slot(),
    ):
        pass
    for row in storage.table("SyncState").query_entities("PartitionKey eq @p", parameters={"p": PARTITION}):
        storage.table("SyncState").delete_entity(PARTITION, row["RowKey"])  # leave no slot held for later tests
