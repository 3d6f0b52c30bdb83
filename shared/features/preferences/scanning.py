"""The preferences feature's part in a scan: which interests a member chose, the audience's catalog for the
run, and the subscription rows changed since the watermark."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from shared.adapters.dataverse import DataverseError
from shared.adapters.ports import DataversePort, MailchimpPort, StoragePort
from shared.features.preferences.catalog import (
    Catalog,
    CatalogWatch,
    Names,
    load_catalog,
    mirror_catalog,
    read_catalog,
    read_rows,
    save_catalog,
)
from shared.model.snapshots import PreferenceRow
from shared.settings import Link

log = logging.getLogger("consent_bridge.preferences")


class CatalogSource:
    """Answers the scan's questions about interests for every link (shared.sync.scan.InterestSource)."""

    def __init__(self, mailchimp: MailchimpPort, dataverse: DataversePort, storage: StoragePort, prefix: str) -> None:
        self.mailchimp = mailchimp
        self.dataverse = dataverse
        self.storage = storage
        self.names = Names(prefix)

    def reading(self, link: Link, *, dry_run: bool) -> CatalogReading:
        # a dry run reads the catalog afresh and stores nothing
        return CatalogReading(self, link, None if dry_run else self.storage)


class CatalogReading:
    """One scan's view of its audience's interests."""

    def __init__(self, source: CatalogSource, link: Link, state: StoragePort | None) -> None:
        self.source = source
        self.link = link
        self.state = state
        self.stored = load_catalog(state, link.name) if state is not None else None
        self.watch = CatalogWatch(self.stored)
        self.current = Catalog()

    def chosen(self, member: dict[str, Any]) -> list[str] | None:
        return self.watch.chosen(member)

    def catalog(self, *, full: bool, counts: Counter[str]) -> list[list[str]]:
        """The audience's interests for this run, as [id, name]. Read from Mailchimp (and mirrored into
        Dataverse) only on a full pass, when a member page showed interests the stored catalog does not
        match, or when none is stored yet for a dry run; otherwise the stored one, so a run with nothing
        changed makes no catalog call."""
        self.current = self._current(full=full, counts=counts)
        return self.current.message_form()

    def _current(self, *, full: bool, counts: Counter[str]) -> Catalog:
        stored, stale, dry_run = self.stored, self.watch.stale, self.state is None
        if stored is not None and not full and not stale:
            return stored
        if stored is None and not full and not stale and not dry_run:
            return Catalog()  # no member has shown an interest, and the last full pass found none
        catalog = read_catalog(self.source.mailchimp, self.link.audience_id, counts)
        counts["catalog_reads"] += 1
        if dry_run:
            return catalog
        if catalog.interests or (stored is not None and stored.interests):
            try:
                changes = mirror_catalog(
                    self.source.dataverse, self.source.names, self.link.audience_id, catalog, counts
                )
            except DataverseError as exc:
                if exc.status != 404:
                    raise
                log.warning(
                    "link %s: the marketing preference tables are missing in Dataverse; preferences are not "
                    "synced until `python -m shared.cli provision` creates them",
                    self.link.name,
                )
                return Catalog()
            counts["catalog_changes"] += len(changes)
            for change in changes:
                log.info("link %s: %s", self.link.name, change)
        if self.state is not None:
            save_catalog(self.state, self.link.name, catalog)
        return catalog

    def rows(self, *, kind: str, since: datetime | None, counts: Counter[str]) -> Iterator[list[PreferenceRow]]:
        """The subscription rows of the list's record kind changed since the watermark: one paged read."""
        if not self.current.interests:
            return
        try:
            for page in read_rows(
                self.source.dataverse,
                self.source.names,
                audience_id=self.link.audience_id,
                kind=kind,
                interests=self.current.ids,
                since=since,
            ):
                counts["preference_calls_dataverse"] += 1
                yield page
        except DataverseError as exc:
            if exc.status != 404:
                raise
            log.warning(
                "link %s: the preference subscription table is missing in Dataverse; "
                "run `python -m shared.cli provision`",
                self.link.name,
            )
