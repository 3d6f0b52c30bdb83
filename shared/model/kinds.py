"""The kinds of Dynamics record a marketing list holds, in one table.

Each kind carries every name the product uses for it: the Web API's entity set and id column, the
marketing list's ``createdfromcode`` and association, and the short codes two stored formats use
(batch messages and the campaign record index); those codes are stored, so they never change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KindName = Literal["contact", "lead", "account"]


@dataclass(frozen=True)
class Kind:
    name: KindName
    entity_set: str  # contacts
    id_attribute: str  # contactid
    list_code: int  # the marketing list's createdfromcode
    list_association: str  # the list's many-to-many navigation property
    wire_code: str  # one character in batch messages
    index_code: int  # one digit in the campaign record index


CONTACT = Kind("contact", "contacts", "contactid", 2, "listcontact_association", "c", 1)
LEAD = Kind("lead", "leads", "leadid", 4, "listlead_association", "l", 2)
ACCOUNT = Kind("account", "accounts", "accountid", 1, "listaccount_association", "a", 3)

KINDS: dict[str, Kind] = {kind.name: kind for kind in (CONTACT, LEAD, ACCOUNT)}
BY_LIST_CODE: dict[int, Kind] = {kind.list_code: kind for kind in KINDS.values()}
BY_WIRE_CODE: dict[str, Kind] = {kind.wire_code: kind for kind in KINDS.values()}
BY_INDEX_CODE: dict[int, Kind] = {kind.index_code: kind for kind in KINDS.values()}
KIND_SETS: dict[str, str] = {kind.name: kind.entity_set for kind in KINDS.values()}
RECORD_TABLES: tuple[str, ...] = ("contact", "lead", "account")
