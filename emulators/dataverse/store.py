"""Rows, indexes, change tracking and marketing-list membership, with an undo journal for change sets.

Cost model (what keeps 100,000-row tables fast):

- every table keeps its ids in a sorted list, so a page of an unfiltered collection (ordered by the
  primary key, as the real service does without ``$orderby``) is a bisect plus a slice;
- every list keeps its members' ids sorted, so a page of ``lists(<id>)/listcontact_association`` is too;
- every write appends ``(version, id)`` to an append-only change log and every delete appends a
  tombstone, so a delta query reads only the changes after its token (stale log entries, whose row
  has moved on to a newer version, are skipped);
- a change set records an undo step per mutation and rolls back in reverse on failure.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .schema import MEMBER_TYPE_CODES, Table


@dataclass
class TableData:
    table: Table
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # ids, sorted
    log_versions: list[int] = field(default_factory=list)  # append-only, increasing
    log_ids: list[str] = field(default_factory=list)
    tomb_versions: list[int] = field(default_factory=list)
    tomb_ids: list[str] = field(default_factory=list)

    def after(self, last_id: str | None) -> int:
        """Index in ``order`` of the first id greater than ``last_id``."""
        return 0 if last_id is None else bisect.bisect_right(self.order, last_id)

    def changed_since(self, version: int, upto: int, after_version: int | None = None) -> Iterator[dict[str, Any]]:
        """Live rows whose current version is in (version, upto], by version, resuming after ``after_version``."""
        start = bisect.bisect_right(self.log_versions, max(version, after_version or 0))
        for index in range(start, len(self.log_versions)):
            row_version = self.log_versions[index]
            if row_version > upto:
                return
            row = self.rows.get(self.log_ids[index])
            if row is not None and row["versionnumber"] == row_version:
                yield row

    def deleted_since(self, version: int, upto: int, after_version: int | None = None) -> Iterator[tuple[int, str]]:
        start = bisect.bisect_right(self.tomb_versions, max(version, after_version or 0))
        for index in range(start, len(self.tomb_versions)):
            if self.tomb_versions[index] > upto:
                return
            yield self.tomb_versions[index], self.tomb_ids[index]

    def compact_log(self) -> None:
        """Drop stale log entries once they outnumber the live rows (never inside a change set)."""
        if len(self.log_versions) < 2 * len(self.rows) + 1024:
            return
        live = sorted((row["versionnumber"], row_id) for row_id, row in self.rows.items())
        self.log_versions = [v for v, _ in live]
        self.log_ids = [i for _, i in live]


class Store:
    """All rows of the organisation. Callers hold the emulator's data lock."""

    def __init__(self, tables: list[Table]) -> None:
        self.tables: dict[str, TableData] = {t.logical_name: TableData(t) for t in tables}
        self.version = 1000  # rowversion is organisation-wide, like the real one
        self.mutations = 0  # bumped by every write; keys the query cache
        self.members: dict[str, list[str]] = {}  # list id -> sorted member ids
        self.membership: dict[tuple[str, str], str] = {}  # (list id, member id) -> listmemberid
        self.member_lists: dict[str, set[str]] = {}  # member id -> list ids
        self.journal: list[Callable[[], None]] | None = None
        # told (table, old row or None, new row, columns the request sent or None) after each insert or replace;
        # inside a change set only once it commits (the plug-in steps: webhooks)
        self.observer: Callable[[str, dict[str, Any] | None, dict[str, Any], frozenset[str] | None], None] | None
        self.observer = None
        self._held: list[tuple[str, dict[str, Any] | None, dict[str, Any], frozenset[str] | None]] = []

    # ---- tables ------------------------------------------------------------------------------
    def add_table(self, table: Table) -> None:
        self.tables[table.logical_name] = TableData(table)
        self._undo(lambda: self.tables.pop(table.logical_name, None))

    def data(self, logical_name: str) -> TableData:
        return self.tables[logical_name]

    def next_version(self) -> int:
        self.version += 1
        return self.version

    # ---- journal -------------------------------------------------------------------------------
    def begin(self) -> None:
        self.journal = []
        self._held = []

    def commit(self) -> None:
        self.journal = None
        held, self._held = self._held, []
        for event in held:
            self._observe(*event)

    def rollback(self) -> None:
        steps, self.journal = self.journal or [], None
        self._held = []
        for step in reversed(steps):
            step()
        self.mutations += 1

    def _observe(
        self, table: str, old: dict[str, Any] | None, new: dict[str, Any], sent: frozenset[str] | None
    ) -> None:
        if self.observer is None:
            return
        if self.journal is not None:
            self._held.append((table, old, new, sent))
        else:
            self.observer(table, old, new, sent)

    def _undo(self, step: Callable[[], None]) -> None:
        if self.journal is not None:
            self.journal.append(step)

    # ---- rows ------------------------------------------------------------------------------------
    def insert(self, logical_name: str, row: dict[str, Any]) -> dict[str, Any]:
        data = self.tables[logical_name]
        row_id = row[data.table.primary_id]
        row["versionnumber"] = self.next_version()
        data.rows[row_id] = row
        bisect.insort(data.order, row_id)
        data.log_versions.append(row["versionnumber"])
        data.log_ids.append(row_id)
        self.mutations += 1
        self._observe(logical_name, None, row, None)

        def undo() -> None:
            data.rows.pop(row_id, None)
            index = bisect.bisect_left(data.order, row_id)
            if index < len(data.order) and data.order[index] == row_id:
                del data.order[index]

        self._undo(undo)
        return row

    def bulk_insert(self, logical_name: str, rows: list[dict[str, Any]]) -> None:
        """Seeding: many rows at once, one sort of the id index instead of one insort each."""
        data = self.tables[logical_name]
        pk = data.table.primary_id
        for row in rows:
            row["versionnumber"] = self.next_version()
            if row[pk] not in data.rows:
                data.order.append(row[pk])
            data.rows[row[pk]] = row
            data.log_versions.append(row["versionnumber"])
            data.log_ids.append(row[pk])
        data.order.sort()
        self.mutations += 1

    def replace(self, logical_name: str, row: dict[str, Any], sent: frozenset[str] | None = None) -> dict[str, Any]:
        """Stores the new state of an existing row under a new version; ``sent``: the columns the request set."""
        data = self.tables[logical_name]
        row_id = row[data.table.primary_id]
        old = data.rows[row_id]
        row["versionnumber"] = self.next_version()
        data.rows[row_id] = row
        data.log_versions.append(row["versionnumber"])
        data.log_ids.append(row_id)
        self.mutations += 1
        self._undo(lambda: data.rows.__setitem__(row_id, old))
        if self.journal is None:
            data.compact_log()
        self._observe(logical_name, old, row, sent)
        return row

    def delete(self, logical_name: str, row_id: str) -> dict[str, Any]:
        data = self.tables[logical_name]
        row = data.rows.pop(row_id)
        index = bisect.bisect_left(data.order, row_id)
        del data.order[index]
        data.tomb_versions.append(self.next_version())
        data.tomb_ids.append(row_id)
        self.mutations += 1

        def undo() -> None:
            data.rows[row_id] = row
            bisect.insort(data.order, row_id)
            data.tomb_versions.pop()
            data.tomb_ids.pop()

        self._undo(undo)
        return row

    # ---- membership ----------------------------------------------------------------------------
    def is_member(self, list_id: str, member_id: str) -> bool:
        return (list_id, member_id) in self.membership

    def member_ids(self, list_id: str) -> list[str]:
        return self.members.get(list_id, [])

    def lists_of(self, member_id: str) -> set[str]:
        return self.member_lists.get(member_id, set())

    def add_member(self, list_id: str, member_id: str, member_type: int, now: datetime, user: str) -> str:
        listmember_id = str(uuid.uuid4())
        row = {
            "listmemberid": listmember_id,
            "name": None,
            "_listid_value": list_id,
            "_entityid_value": member_id,
            "entitytype": MEMBER_TYPE_CODES[member_type],
            "entityidtypecode": member_type,
            "createdon": now,
            "modifiedon": now,
            "_createdby_value": user,
            "_modifiedby_value": user,
        }
        self.insert("listmember", row)
        self._count(list_id, +1)
        bisect.insort(self.members.setdefault(list_id, []), member_id)
        self.membership[(list_id, member_id)] = listmember_id
        self.member_lists.setdefault(member_id, set()).add(list_id)
        self._undo(lambda: self._unlink(list_id, member_id))
        return listmember_id

    def remove_member(self, list_id: str, member_id: str) -> None:
        listmember_id = self.membership[(list_id, member_id)]
        self._unlink(list_id, member_id)
        self.delete("listmember", listmember_id)
        self._count(list_id, -1)

        def undo() -> None:
            bisect.insort(self.members.setdefault(list_id, []), member_id)
            self.membership[(list_id, member_id)] = listmember_id
            self.member_lists.setdefault(member_id, set()).add(list_id)

        self._undo(undo)

    def _count(self, list_id: str, change: int) -> None:
        """Keeps the list's membercount (in place: the count is not a change of the list record)."""
        row = self.tables["list"].rows.get(list_id)
        if row is None:
            return
        before = row.get("membercount")
        row["membercount"] = (before or 0) + change
        self._undo(lambda: row.__setitem__("membercount", before))

    def _unlink(self, list_id: str, member_id: str) -> None:
        self.membership.pop((list_id, member_id), None)
        ids = self.members.get(list_id, [])
        index = bisect.bisect_left(ids, member_id)
        if index < len(ids) and ids[index] == member_id:
            del ids[index]
        lists = self.member_lists.get(member_id)
        if lists is not None:
            lists.discard(list_id)
            if not lists:
                del self.member_lists[member_id]
