"""The batch message: what the scan writes is what reconcile reads, in every version still readable."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.errors import StoredFormatError
from shared.model.snapshots import Group, MemberSnapshot, PreferenceRow, RecordSnapshot
from shared.model.wire import WIRE_VERSION, BatchMessage, pack, unpack
from shared.rules.addresses import member_hash

COLUMNS = ["donotbulkemail", "msdyn_gdproptout"]
INTERESTS = [["i1", "News"], ["i2", "Offers"]]
ADA = "ada@example.com"
BOB = "bob@example.org"
ABSENT = "0123456789abcdef0123456789abcdef"  # a group that travels without an address


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def groups() -> list[Group]:
    """Every part of the format: members with interests, each kind of record, removals, moves, renames,
    preference rows with and without their own row id, and a group known only by its hash."""
    ada = Group(
        member_hash(ADA),
        ADA,
        MemberSnapshot(
            ADA, "subscribed", at("2024-03-01T10:00:00+00:00"), "c-1", at("2024-02-01T09:00:00+00:00"), ["i2"]
        ),
        True,
        [
            RecordSnapshot(
                "11111111-1111-1111-1111-111111111111",
                "contact",
                ADA,
                {"donotbulkemail": True, "msdyn_gdproptout": False},
                at("2024-03-02T11:00:00+00:00"),
                0,
                1,
            ),
            RecordSnapshot(
                "22222222-2222-2222-2222-222222222222",
                "lead",
                ADA,
                {"donotbulkemail": False, "msdyn_gdproptout": True},
                at("2024-03-03T12:00:00+00:00"),
                1,
                3,
            ),
        ],
        ["33333333-3333-3333-3333-333333333333"],
        [["44444444-4444-4444-4444-444444444444", ABSENT]],
        "fedcba9876543210fedcba9876543210",
        [
            PreferenceRow(
                "11111111-1111-1111-1111-111111111111", "contact", "i1", True, at("2024-03-04T13:00:00+00:00")
            ),
            PreferenceRow(
                "22222222-2222-2222-2222-222222222222", "lead", "i2", False, at("2024-03-05T14:00:00+00:00"), "row-9"
            ),
        ],
    )
    absent = Group(ABSENT, "", None, False, [], ["55555555-5555-5555-5555-555555555555"])
    bob = Group(
        member_hash(BOB),
        BOB,
        None,
        True,
        [
            RecordSnapshot(
                "66666666-6666-6666-6666-666666666666",
                "account",
                BOB,
                {"donotbulkemail": False, "msdyn_gdproptout": False},
                at("2024-01-01T00:00:00+00:00"),
                0,
                None,
            )
        ],
    )
    return [ada, absent, bob]


def message() -> BatchMessage:
    return BatchMessage(
        "link-a", "run-1", "batch-1", False, True, groups(), list(COLUMNS), [list(i) for i in INTERESTS]
    )


# Written by the release before formats carried a version, from message() above: it must stay readable.
UNVERSIONED: dict[str, Any] = {
    "link": "link-a",
    "run": "run-1",
    "batch": "batch-1",
    "fresh": False,
    "full": True,
    "columns": ["donotbulkemail", "msdyn_gdproptout"],
    "groups": (
        "eNqVkttqxCAQht9leqvFs8ld30NyocYthWxTsizt43fGaC8WoewH/qBk/jlkQoC4xrfyE69fW3nN+xVYgNs93fLxkcoKTHoxq8krIRhkLuuD"
        "834S9CAkLEyyEEA2+EA6gA54pDhdta+ugskFc6oGH0gHgzeoWauBcdVAMr2Qg27wgXSwXCzWNPhAOjWP0sY6P80x5bVcHu+AaeFS1pziPHln"
        "jVZSPN7huelQO9SbtdTbc4ORFI2xzpy/69i/+YxFksvLv82wz/u2oUOgz22DD6QD1Tjt6W999uO92dSdcA0+kA5WHmnU504Y4dpOkAtWvvwC"
        "+g6aAA=="
    ),
    "interests": [["i1", "News"], ["i2", "Offers"]],
}


def test_a_message_without_a_version_reads_as_it_always_did() -> None:
    back = BatchMessage.decode(UNVERSIONED, hasher=member_hash)

    assert back == message()


def test_the_groups_are_encoded_byte_for_byte_as_before() -> None:
    encoded = message().encode()

    assert encoded == UNVERSIONED | {"v": WIRE_VERSION}


def test_a_message_round_trips() -> None:
    original = message()

    assert BatchMessage.decode(original.encode(), hasher=member_hash) == original


def test_an_unknown_version_is_refused_naming_the_batch_and_what_to_do() -> None:
    newer = message().encode() | {"v": WIRE_VERSION + 1}

    with pytest.raises(StoredFormatError) as refused:
        BatchMessage.decode(newer, hasher=member_hash)

    text = str(refused.value)
    assert "link-a" in refused.value.subject and "run-1" in refused.value.subject and "batch-1" in refused.value.subject
    assert f"version {WIRE_VERSION + 1}" in text
    assert "newer version" in text and "start a new one" in text
    assert ADA not in text


def test_the_member_hash_comes_from_the_hasher_the_caller_passes() -> None:
    packed = pack(groups()[0], COLUMNS, ["i1", "i2"])

    assert unpack(packed, COLUMNS, ["i1", "i2"], hasher=member_hash).member_hash == member_hash(ADA)
    assert (
        unpack(packed, COLUMNS, ["i1", "i2"], hasher=lambda email: f"hash of {email}").member_hash == f"hash of {ADA}"
    )
    assert member_hash(ADA) == hashlib.md5(ADA.encode()).hexdigest()


def test_a_group_without_an_address_keeps_its_hash_and_never_calls_the_hasher() -> None:
    def refuse(email: str) -> str:
        raise AssertionError("no address to hash")

    packed = pack(groups()[1], COLUMNS)

    assert packed[0] == f"#{ABSENT}"
    assert unpack(packed, COLUMNS, hasher=refuse) == groups()[1]


def test_packing_leaves_out_what_reconcile_can_derive() -> None:
    ada = groups()[0]
    ada.moved = []
    ada.renamed_from = None

    packed = pack(ada, COLUMNS, ["i1", "i2"])
    back = unpack(packed, COLUMNS, ["i1", "i2"], hasher=member_hash)

    assert packed[1][2] is None  # the contact id only travels with an address change
    assert back.member is not None and back.member.contact_id is None
    assert [r.kind for r in back.records] == ["contact", "lead"]
    assert [p.interest_id for p in back.preferences] == ["i1", "i2"]


def test_kinds_travel_as_one_character() -> None:
    packed = pack(groups()[2], COLUMNS)

    assert packed[3][0][1] == "a"
    assert packed[3][0][3] == int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
