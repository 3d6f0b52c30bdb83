"""The bulk Dataverse writer against the emulator: UpdateMultiple and CreateMultiple where the table supports
them, a refused chunk sent again as $batch on its own, chunks halved on a timeout, Retry-After honoured, and
never two writes to one record in flight at once."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.adapters import bulk
from shared.adapters.dataverse import BatchOperation, Dataverse
from tests.emulators.dataverse_support import sent_in_batches

API = "/api/data/v9.2"
UPDATE_MULTIPLE = f"POST {API}/{{entityset}}/Microsoft.Dynamics.CRM.UpdateMultiple"
CREATE_MULTIPLE = f"POST {API}/{{entityset}}/Microsoft.Dynamics.CRM.CreateMultiple"
BATCH = f"POST {API}/$batch"


def seed(admin: Any, entity: str, count: int) -> list[str]:
    key = {"contacts": "contactid", "leads": "leadid"}[entity]
    ids = [str(uuid.uuid4()) for _ in range(count)]
    admin.seed({entity: [{key: i, "lastname": f"L{n}", "donotbulkemail": False} for n, i in enumerate(ids)]})
    return ids


def record_patch(entity: str, record: str, body: dict[str, Any]) -> BatchOperation:
    """The sync's record PATCH: never creates a record, answers the new modifiedon."""
    return BatchOperation(
        "PATCH", f"{entity}({record})?$select=modifiedon", body, {"If-Match": "*", "Prefer": "return=representation"}
    )


def rows(admin: Any, entity: str) -> dict[str, dict[str, Any]]:
    key = {"contacts": "contactid", "leads": "leadid"}[entity]
    return {row[key]: row for row in admin.state(entity=entity)["rows"]}


def writes(admin: Any) -> dict[str, int]:
    return {route: n for route, n in admin.calls().items() if not route.startswith("GET ")}


def test_record_patches_go_as_one_update_multiple_and_answer_modifiedon(dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed(admin, "contacts", 5)
    client = Dataverse(dataverse_emulator.url)

    results = bulk.write(client, [record_patch("contacts", i, {"donotbulkemail": True}) for i in ids])

    assert writes(admin) == {UPDATE_MULTIPLE: 1}
    assert all(r["donotbulkemail"] is True for r in rows(admin, "contacts").values())
    written = {r["contactid"]: r["modifiedon"] for r in rows(admin, "contacts").values()}
    assert [r.status for r in results] == [200] * 5
    assert all(result.body["modifiedon"] >= written[i] for i, result in zip(ids, results, strict=True))


def test_a_refused_chunk_falls_back_to_batch_for_that_chunk_only(dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    leads = seed(admin, "leads", 9)
    admin.call("POST", "qualify-lead", {"id": leads[4]})  # a read-only lead in the middle chunk
    client = Dataverse(dataverse_emulator.url)
    client.chunk_sizes["lead"] = 3

    results = bulk.write(client, [record_patch("leads", i, {"donotbulkemail": True}) for i in leads])

    assert writes(admin) == {UPDATE_MULTIPLE: 3, BATCH: 1}
    assert admin.call("GET", "batch-parts")["total"] == 3  # the refused chunk's three PATCHes, continue-on-error
    assert [r.ok for r in results] == [True] * 4 + [False] + [True] * 4
    assert results[4].status == 400
    stored = rows(admin, "leads")
    assert [stored[i]["donotbulkemail"] for i in leads] == [True] * 4 + [False] + [True] * 4


def test_new_rows_go_as_create_multiple(dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    client = Dataverse(dataverse_emulator.url)

    results = bulk.write(client, [BatchOperation("POST", "contacts", {"lastname": f"New{n}"}) for n in range(3)])

    assert writes(admin) == {CREATE_MULTIPLE: 1}
    stored = rows(admin, "contacts")
    assert [stored[r.entity_id]["lastname"] for r in results] == ["New0", "New1", "New2"]


def test_upserts_a_record_written_twice_and_a_few_patches_beside_them_ride_in_one_batch(
    dataverse_emulator: Any,
) -> None:
    admin = dataverse_emulator.admin
    [kept, other] = seed(admin, "contacts", 2)
    client = Dataverse(dataverse_emulator.url)
    upsert = BatchOperation("PATCH", f"contacts({uuid.uuid4()})", {"lastname": "Upserted"})  # may create
    twice = [record_patch("contacts", kept, {"firstname": name}) for name in ("A", "B")]  # in order
    single = record_patch("contacts", other, {"firstname": "C"})  # an UpdateMultiple would be one call more

    results = bulk.write(client, [upsert, *twice, single])

    assert writes(admin) == {BATCH: 1}
    assert [r.status for r in results] == [204, 200, 200, 200]
    stored = rows(admin, "contacts")
    assert stored[kept]["firstname"] == "B" and stored[other]["firstname"] == "C" and len(stored) == 3


def test_a_table_without_the_message_is_written_by_batch(dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    list_id = str(uuid.uuid4())
    admin.seed({"lists": [{"listid": list_id, "listname": "L", "type": False, "createdfromcode": 2}]})
    client = Dataverse(dataverse_emulator.url)

    results = bulk.write(client, [BatchOperation("PATCH", f"lists({list_id})", {"listname": "M"}, {"If-Match": "*"})])

    assert [r.status for r in results] == [204]
    assert writes(admin) == {BATCH: 1}
    assert not client.supports_message("list", "UpdateMultiple")


def test_a_timeout_halves_the_chunk_until_the_service_takes_it(dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed(admin, "contacts", 8)
    admin.call("POST", "latency", {"enabled": True, "timeScale": 0.001, "sqlTimeoutSeconds": 0.1})  # 3 records
    client = Dataverse(dataverse_emulator.url)

    results = bulk.write(client, [record_patch("contacts", i, {"firstname": "T"}) for i in ids])

    assert all(r.ok for r in results)
    assert client.chunk_sizes["contact"] == 2
    assert admin.call("GET", "bulk-targets")["total"] == 8
    assert all(r["firstname"] == "T" for r in rows(admin, "contacts").values())


def test_retry_after_holds_back_every_write_of_the_client(dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed(admin, "contacts", 4)
    admin.call("POST", "settings", {"faultRetryAfter": "0.3"})
    admin.fail_next(1, pattern="UpdateMultiple", status=429)
    slept: list[float] = []
    client = Dataverse(dataverse_emulator.url, sleep=lambda s: (slept.append(s), time.sleep(s)))

    started = time.monotonic()
    results = bulk.write(client, [record_patch("contacts", i, {"firstname": "R"}) for i in ids])

    assert all(r.ok for r in results)
    assert slept and slept[0] >= 0.3  # Retry-After, plus a little jitter
    assert time.monotonic() - started >= 0.3
    assert admin.calls()[UPDATE_MULTIPLE] == 2  # refused once, then sent again
    assert all(r["firstname"] == "R" for r in rows(admin, "contacts").values())


class WatchedRecords(bulk.RecordsInFlight):
    """Records when each record's writes start and end, to show that they never overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self._spans = threading.Lock()

    @contextmanager
    def hold(self, record_ids: set[str]) -> Iterator[None]:
        with super().hold(record_ids):
            start = time.monotonic()
            try:
                yield
            finally:
                end = time.monotonic()
                with self._spans:
                    for record in record_ids:
                        self.spans.setdefault(record, []).append((start, end))


def test_two_writes_to_one_record_are_never_in_flight_at_once(dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed(admin, "contacts", 2400)
    admin.call("POST", "latency", {"enabled": True, "timeScale": 0.001, "dopHint": 4})
    client = Dataverse(dataverse_emulator.url, max_parallel=4)
    client.whoami()  # the service's hint arrives with any answer
    watched = WatchedRecords()
    errors: list[BaseException] = []

    def write(column: str) -> None:
        try:
            bulk.write(client, [record_patch("contacts", i, {column: "W"}) for i in ids], in_flight=watched)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(column,)) for column in ("firstname", "lastname")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert client.parallelism == 4 and admin.calls()[UPDATE_MULTIPLE] == 6  # 3 chunks of 800 each
    for record in ids:
        [first, second] = sorted(watched.spans[record])
        assert first[1] <= second[0], record
    stored = rows(admin, "contacts")
    assert all(r["firstname"] == "W" and r["lastname"] == "W" for r in stored.values())
    assert not watched.held()


def test_a_write_is_cut_into_as_few_chunks_as_the_sizes_allow_and_they_run_side_by_side(
    dataverse_emulator: Any,
) -> None:
    admin = dataverse_emulator.admin
    ids = seed(admin, "contacts", 2500)
    admin.call("POST", "latency", {"enabled": True, "timeScale": 0.01, "dopHint": 4})
    client = Dataverse(dataverse_emulator.url, max_parallel=4)
    client.whoami()

    watched = WatchedRecords()

    bulk.write(client, [record_patch("contacts", i, {"firstname": "A"}) for i in ids], in_flight=watched)

    assert admin.calls()[UPDATE_MULTIPLE] == 3  # 2,500 records: three chunks of at most 1,000, not four
    spans = sorted({span for held in watched.spans.values() for span in held})
    assert len(spans) == 3 and spans[1][0] < spans[0][1]  # the second began before the first ended
    assert all(r["firstname"] == "A" for r in rows(admin, "contacts").values())


def test_which_tables_take_a_message_is_asked_once_across_clients(dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed(admin, "contacts", 3)
    kept: dict[str, frozenset[str]] = {}
    for _ in range(2):  # two processes, one after the other
        client = Dataverse(dataverse_emulator.url)
        client.remember_messages(lambda: dict(kept), kept.__setitem__)
        bulk.write(client, [record_patch("contacts", i, {"firstname": "M"}) for i in ids])

    assert admin.calls()[f"GET {API}/{{entityset}}"] == 1  # the sdkmessagefilters read, by the first client only
    assert "contact" in kept["UpdateMultiple"]
    assert admin.calls()[UPDATE_MULTIPLE] == 2


# ---- operations tied to a record's write ---------------------------------------------------------------------------
def tied_row(record: str, lastname: str) -> BatchOperation:
    """A row written with the record's write, all or nothing (as a consent history row is with its PATCH)."""
    return BatchOperation("PATCH", f"contacts({uuid.uuid4()})", {"lastname": lastname}, {}, travels_with=record)


def upsert(lastname: str) -> BatchOperation:
    return BatchOperation("PATCH", f"contacts({uuid.uuid4()})", {"lastname": lastname}, {})


def test_a_tied_record_patch_leaves_update_multiple_for_a_change_set_with_its_row(dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    ids = seed(admin, "contacts", 1000)
    client = Dataverse(dataverse_emulator.url)
    operations = [record_patch("contacts", i, {"firstname": "T"}) for i in ids]

    results = bulk.write(client, [*operations, tied_row(ids[500], "History")])

    assert writes(admin) == {UPDATE_MULTIPLE: 1, BATCH: 1}
    assert admin.call("GET", "bulk-targets")["total"] == 999  # every record but the tied one
    patch, row = sent_in_batches(admin)
    assert patch.url.startswith(f"{API}/contacts({ids[500]})") and row.body == {"lastname": "History"}
    assert patch.change_set is not None and patch.change_set == row.change_set
    assert [r.status for r in results] == [200] * 1000 + [204]
    assert all(r["firstname"] == "T" for r in rows(admin, "contacts").values() if r["contactid"] in set(ids))


def test_pages_split_for_parallelism_never_separate_a_tied_group(dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    [record] = seed(admin, "contacts", 1)
    client = Dataverse(dataverse_emulator.url)
    group = [record_patch("contacts", record, {"firstname": "G"}), tied_row(record, "G1"), tied_row(record, "G2")]
    # 1,500 operations make two pages of 750: the group, at 748 to 750, lies across the even cut
    operations = [*(upsert(f"A{n}") for n in range(748)), *group, *(upsert(f"B{n}") for n in range(749))]

    results = bulk.write(client, operations)

    assert writes(admin) == {BATCH: 2}
    sent = sent_in_batches(admin)
    assert sorted(Counter(s.request for s in sent).values()) == [749, 751]
    together = [
        s for s in sent if s.url.startswith(f"{API}/contacts({record})") or s.body.get("lastname") in ("G1", "G2")
    ]
    assert len(together) == 3 and len({s.change_set for s in together}) == 1 and together[0].change_set is not None
    assert all(s.change_set is None for s in sent if s not in together)
    assert all(r.ok for r in results) and len(results) == 1500


def test_a_refused_patch_takes_its_tied_row_with_it_and_the_others_are_written(dataverse_emulator: Any) -> None:
    admin = dataverse_emulator.admin
    leads = seed(admin, "leads", 3)
    admin.call("POST", "qualify-lead", {"id": leads[1]})  # read-only: its PATCH is refused
    client = Dataverse(dataverse_emulator.url)
    patches = [record_patch("leads", i, {"donotbulkemail": True}) for i in leads]
    history = [tied_row(i, f"History {n}") for n, i in enumerate(leads)]

    results = bulk.write(client, [*patches, *history, upsert("Loose")])

    assert writes(admin) == {BATCH: 1}
    assert [r.status for r in results] == [200, 400, 200, 204, 400, 204, 204]
    assert results[1].refusal == results[4].refusal and "read-only" in results[1].refusal
    assert sorted(r["lastname"] for r in rows(admin, "contacts").values()) == ["History 0", "History 2", "Loose"]
    stored = rows(admin, "leads")
    assert [stored[i]["donotbulkemail"] for i in leads] == [True, False, True]


def test_the_adapter_sends_a_change_set_whole_in_the_next_request_rather_than_split_it(
    dataverse_emulator: Any,
) -> None:
    admin = dataverse_emulator.admin
    [record] = seed(admin, "contacts", 1)
    client = Dataverse(dataverse_emulator.url)
    group = [record_patch("contacts", record, {"firstname": "G"}), tied_row(record, "G1"), tied_row(record, "G2")]

    results = client.batch([*(upsert(f"A{n}") for n in range(999)), *group])

    sent = sent_in_batches(admin)
    assert Counter(s.request for s in sent) == {0: 999, 1: 3}  # the first request keeps 999, not 1,000
    assert {s.change_set for s in sent if s.request == 1} == {(1, 0)}
    assert [r.status for r in results] == [204] * 999 + [200, 204, 204]
