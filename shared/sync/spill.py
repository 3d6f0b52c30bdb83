"""Spill files of a scan: what it reads goes to disk by member hash (or record id) prefix, so memory follows
one bucket, not the list. Buckets group members and records by hash; alias spills find address changes
against the stored alias index one bucket at a time; the preference spill gives rows their member hash."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from shared.model.snapshots import Group, MemberSnapshot, PreferenceRow, RecordSnapshot
from shared.rules.addresses import normalize_email
from shared.state.aliases import AliasIndex, alias_bucket

BUCKETS = 64


class AliasSpill:
    """(key, member hash) pairs of one kind (record ids, Mailchimp contact ids), spilled by key prefix,
    then compared with the stored index one bucket at a time: a key under a new hash is an address change."""

    def __init__(self, directory: str, kind: str) -> None:
        self.directory = directory
        self.kind = kind
        self.files: dict[str, Any] = {}

    def add(self, key: str, under: str) -> None:
        first = alias_bucket(key)
        handle = self.files.get(first)
        if handle is None:
            handle = self.files[first] = open(  # noqa: SIM115 - closed in resolve
                os.path.join(self.directory, f"{self.kind}-{ord(first):03d}.txt"), "w+", encoding="utf-8"
            )
        handle.write(f"{key}\t{under}\n")

    def peek(self, first: str) -> dict[str, str]:
        """The keys spilled under one first character so far, and their hashes (the file stays open)."""
        handle = self.files.get(first)
        if handle is None:
            return {}
        handle.seek(0)
        current = dict(line.rstrip("\n").split("\t") for line in handle)
        handle.seek(0, os.SEEK_END)
        return current

    def resolve(self, index: AliasIndex, *, fresh: bool, on_move: Callable[[str, str, str], None]) -> int:
        """Calls on_move(key, new hash, old hash) for every key now under another hash; records new keys.

        Returns the number of keys seen for the first time (written to the index now: they had no entry, so
        nothing is lost if the run stops; moved keys are rewritten by reconcile once the move is applied).
        """
        new_keys = 0
        for first, handle in sorted(self.files.items()):
            handle.seek(0)
            current = dict(line.rstrip("\n").split("\t") for line in handle)
            handle.close()
            known = {} if fresh else index.read_range(f"s:{first}", f"s:{first}~")
            fresh_entries = {key: h for key, h in current.items() if key not in known}
            for key, now_under in current.items():
                old = known.get(key)
                if old is not None and old != now_under:
                    on_move(key, now_under, old)
            if fresh_entries:
                index.update(fresh_entries)
                new_keys += len(fresh_entries)
        return new_keys


class PreferenceSpill:
    """Subscription rows read by the scan, spilled by the first character of their record id, then given the
    member hash of their record: the one read in this run, else the one the records index holds."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.files: dict[str, Any] = {}
        self.rows = 0

    def add(self, row: PreferenceRow) -> None:
        first = alias_bucket(row.record_id)
        handle = self.files.get(first)
        if handle is None:
            handle = self.files[first] = open(  # noqa: SIM115 - closed in resolve
                os.path.join(self.directory, f"preferences-{ord(first):03d}.jsonl"), "w+", encoding="utf-8"
            )
        handle.write(json.dumps(row.encode(), separators=(",", ":")) + "\n")
        self.rows += 1

    def resolve(
        self, records: AliasSpill, index: AliasIndex | None, *, fresh: bool, add: Callable[[str, PreferenceRow], None]
    ) -> int:
        """Calls add(member hash, row) for every row whose record the link knows; returns the rows left out."""
        unknown = 0
        for first, handle in sorted(self.files.items()):
            handle.seek(0)
            rows = [PreferenceRow.decode(json.loads(line)) for line in handle]
            handle.close()
            current = records.peek(first)
            known: dict[str, str] = {}
            if index is not None and not fresh and any(r.record_id not in current for r in rows):
                known = index.read_range(f"s:{first}", f"s:{first}~")
            for row in rows:
                under = current.get(row.record_id) or known.get(row.record_id)
                if under is None:
                    unknown += 1  # a record that has never been in this link's marketing list
                    continue
                add(under, row)
        return unknown


class Buckets:
    """Spills (kind, hash, payload) lines to files by hash prefix, then yields groups bucket by bucket."""

    def __init__(self, directory: str) -> None:
        self.files = [
            open(os.path.join(directory, f"{i:02d}.jsonl"), "w+", encoding="utf-8")  # noqa: SIM115
            for i in range(BUCKETS)
        ]

    def add(self, kind: str, member_hash: str, payload: Any) -> None:
        bucket = int(member_hash[:2], 16) * BUCKETS // 256
        self.files[bucket].write(json.dumps([kind, member_hash, payload], separators=(",", ":")) + "\n")

    def groups(self, *, full: bool) -> Iterator[Group]:
        for handle in self.files:
            handle.seek(0)
            groups: dict[str, Group] = {}
            mapped: dict[str, list[str]] = {}
            archived: dict[str, Any] = {}
            for line in handle:
                kind, key, payload = json.loads(line)
                if kind == "mapped":
                    mapped[key] = payload
                    continue
                if kind == "archived":
                    archived[key] = payload
                    continue
                if kind in ("moved", "renamed", "preference"):
                    extended = groups.get(key) or groups.setdefault(key, Group(key, "", member_seen=full))
                    if kind == "moved" and payload not in extended.moved:
                        extended.moved.append(payload)
                    elif kind == "renamed":
                        extended.renamed_from = payload
                    elif kind == "preference":
                        extended.preferences.append(PreferenceRow.decode(payload))
                    continue
                group: Group | None = groups.get(key)
                if kind == "retry":
                    retried = Group.decode(payload)
                    if group is None:
                        groups[key] = retried
                    else:  # a fresh read wins; keep what only the retry knows
                        group.member = group.member or retried.member
                        known = {r.record_id for r in group.records}
                        group.records += [r for r in retried.records if r.record_id not in known]
                        read = {(p.record_id, p.interest_id) for p in group.preferences}
                        group.preferences += [
                            p for p in retried.preferences if (p.record_id, p.interest_id) not in read
                        ]
                    continue
                if group is None:
                    group = groups[key] = Group(key, payload[0] if kind == "member" else "", member_seen=full)
                if kind == "member":
                    group.member = MemberSnapshot.decode(payload)
                    group.email = group.member.email.strip().lower()
                    group.member_seen = True
                else:
                    record = RecordSnapshot.decode(payload)
                    if all(r.record_id != record.record_id for r in group.records):
                        group.records.append(record)
                    group.email = group.email or normalize_email(record.email) or ""
            for key, payload in archived.items():
                # a member the audience holds archived: only its records need to know (never revived); an
                # archived member no record meets is no work
                found = groups.get(key)
                if found is not None and found.records and found.member is None:
                    found.member = MemberSnapshot.decode(payload)
                    found.member_seen = True
            for key, record_ids in mapped.items():  # full pass: mapped records no longer in the list
                known_group = groups.get(key)
                seen = {r.record_id for r in known_group.records} if known_group else set()
                gone = [rid for rid in record_ids if rid not in seen]
                if gone:
                    if known_group is None:
                        known_group = groups[key] = Group(key, "", member_seen=full)
                    known_group.removed = gone
            for key in sorted(groups):
                yield groups[key]
            handle.close()
