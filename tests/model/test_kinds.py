"""The one table of record kinds: every name a kind goes by, and the stored codes that must never change."""

from __future__ import annotations

import pytest

from shared.model.kinds import (
    ACCOUNT,
    BY_INDEX_CODE,
    BY_LIST_CODE,
    BY_WIRE_CODE,
    CONTACT,
    KIND_SETS,
    KINDS,
    LEAD,
    RECORD_TABLES,
    Kind,
)


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        (CONTACT, ("contact", "contacts", "contactid", 2, "listcontact_association", "c", 1)),
        (LEAD, ("lead", "leads", "leadid", 4, "listlead_association", "l", 2)),
        (ACCOUNT, ("account", "accounts", "accountid", 1, "listaccount_association", "a", 3)),
    ],
)
def test_each_kind_keeps_its_names_and_stored_codes(kind: Kind, names: tuple[object, ...]) -> None:
    assert (
        kind.name,
        kind.entity_set,
        kind.id_attribute,
        kind.list_code,
        kind.list_association,
        kind.wire_code,
        kind.index_code,
    ) == names


def test_every_lookup_finds_the_same_kinds() -> None:
    every = {CONTACT, LEAD, ACCOUNT}

    assert set(KINDS.values()) == every
    assert set(BY_LIST_CODE.values()) == every
    assert set(BY_WIRE_CODE.values()) == every
    assert set(BY_INDEX_CODE.values()) == every
    assert all(KINDS[kind.name] is kind for kind in every)


def test_codes_are_unique_so_a_stored_code_names_one_kind() -> None:
    assert len({kind.list_code for kind in KINDS.values()}) == 3
    assert len({kind.wire_code for kind in KINDS.values()}) == 3
    assert len({kind.index_code for kind in KINDS.values()}) == 3
    assert all(len(kind.wire_code) == 1 for kind in KINDS.values())


def test_entity_sets_and_tables() -> None:
    assert KIND_SETS == {"contact": "contacts", "lead": "leads", "account": "accounts"}
    assert set(RECORD_TABLES) == set(KINDS)


def test_a_kind_is_immutable() -> None:
    with pytest.raises(AttributeError):
        CONTACT.wire_code = "x"  # type: ignore[misc]  # the point: a frozen dataclass refuses it
