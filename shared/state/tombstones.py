"""Tombstones: the member hashes of people who were forgotten, so that no later run adds them again (rule 12).

A tombstone holds the member hash and nothing else about the person: no address, no record id, no name.
It lives in SyncState, partition ``erasure|tombstones`` (a ``|`` no link name can contain), RowKey
``<member hash>|<scope>``:

- scope ``*``: the person was forgotten everywhere (the ``forget`` command, or ``ON_DYNAMICS_DELETE=forget``).
  Erasure is about a person, not an audience: one request covers every linked audience, including links
  added later.
- scope ``<link name>``: Mailchimp answered "Forgotten Email Not Subscribed" in that link's audience. Mailchimp
  scopes a permanent delete to one audience (the path carries the list id), so the other audiences stay open.

Rows are keyed by hash first so that the tombstones of a unit's hashes are one range query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from shared.adapters.ports import StoragePort
from shared.adapters.storage import SYNC_STATE, upsert
from shared.model.times import now
from shared.state.versions import STATE_VERSION, VERSION, check_version

PARTITION = "erasure|tombstones"
EVERYWHERE = "*"


@dataclass(frozen=True)
class Tombstone:
    member_hash: str
    scope: str  # EVERYWHERE, or the one link whose audience forgot the member
    reason: str  # "forget" (the command), "dynamics-deleted", "mailchimp-forgotten"
    when: datetime | None

    def covers(self, link: str) -> bool:
        return self.scope in (EVERYWHERE, link)


class Tombstones:
    def __init__(self, storage: StoragePort) -> None:
        self.storage = storage
        self.operations = 0  # storage calls made

    def add(self, member_hash: str, *, reason: str, scope: str = EVERYWHERE, when: datetime | None = None) -> None:
        entity = {
            "PartitionKey": PARTITION,
            "RowKey": f"{member_hash}|{scope}",
            VERSION: STATE_VERSION,
            "reason": reason,
            "when": when or now(),
        }
        self.operations += self.storage.write(SYNC_STATE, [upsert(entity)])

    def of(self, member_hash: str) -> list[Tombstone]:
        """Every tombstone of one member hash (everywhere and per link)."""
        return self._range(member_hash, member_hash)

    def among(self, link: str, hashes: Iterable[str]) -> dict[str, Tombstone]:
        """The tombstones covering this link among these hashes: one range query from the least to the greatest
        hash, so the call count does not grow with the unit."""
        wanted = set(hashes)
        if not wanted:
            return {}
        found: dict[str, Tombstone] = {}
        for stone in self._range(min(wanted), max(wanted)):
            if stone.member_hash in wanted and stone.covers(link):
                found.setdefault(stone.member_hash, stone)
        return found

    def _range(self, first: str, last: str) -> list[Tombstone]:
        self.operations += 1
        rows = self.storage.query(
            SYNC_STATE,
            "PartitionKey eq @p and RowKey ge @a and RowKey lt @b",
            {"p": PARTITION, "a": f"{first}|", "b": f"{last}|~"},
        )
        stones = []
        for row in rows:
            check_version(SYNC_STATE, row)
            member_hash, scope = str(row["RowKey"]).split("|", 1)
            stones.append(Tombstone(member_hash, scope, str(row.get("reason") or ""), row.get("when")))
        return stones
