"""The event message on ``sync-events``: what a delivery named, in a few dozen bytes, versioned.

A Mailchimp event names an audience and a member hash (two for an address change); a Dataverse event names a
table and a record id, and who made the change. Addresses never travel: the handler reads the member and the
records again. ``at`` is when the change happened on the service (Mailchimp's ``fired_at``, Dataverse's
``OperationCreatedOn``), ``received`` when the route accepted it: latency is measured from ``at``. An unsubscribe
or cleaned event also keeps why, as Mailchimp said it (``data[reason]``, ``data[campaign_id]``); a reader that does
not know those keys ignores them, so the version stays 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shared.errors import StoredFormatError
from shared.model.times import epoch, from_epoch, now

EVENT_VERSION = 1
READABLE_VERSIONS = (1,)
MAILCHIMP = "mailchimp"
DATAVERSE = "dataverse"
_SIDE_CODES = {MAILCHIMP: "m", DATAVERSE: "d"}
_SIDES = {code: side for side, code in _SIDE_CODES.items()}


@dataclass(frozen=True)
class Event:
    side: str  # MAILCHIMP or DATAVERSE
    received: datetime
    at: datetime | None = None
    # Mailchimp: the audience, the event type, the member hash (the new one for upemail) and the old one
    audience: str = ""
    type: str = ""
    member_hash: str = ""
    old_hash: str = ""
    reason: str = ""  # unsubscribe and cleaned: the delivery's data[reason]
    campaign_id: str = ""  # unsubscribe and cleaned: the delivery's data[campaign_id]
    # Dataverse: the table's logical name, the record id, the message (Create, Update) and the initiating user
    entity: str = ""
    record_id: str = ""
    message: str = ""
    user: str = ""

    @property
    def changed_at(self) -> datetime:
        return self.at or self.received

    def encode(self) -> dict[str, Any]:
        body: dict[str, Any] = {"v": EVENT_VERSION, "s": _SIDE_CODES[self.side], "r": epoch(self.received)}
        if self.at is not None:
            body["f"] = epoch(self.at)
        if self.side == MAILCHIMP:
            body.update(a=self.audience, t=self.type, h=self.member_hash)
            if self.old_hash:
                body["o"] = self.old_hash
            if self.reason:
                body["y"] = self.reason
            if self.campaign_id:
                body["c"] = self.campaign_id
        else:
            body.update(e=self.entity, i=self.record_id, m=self.message, u=self.user)
        return body

    @classmethod
    def decode(cls, body: dict[str, Any]) -> Event:
        """Raises StoredFormatError for a message of a version this release cannot read."""
        version = body.get("v")
        if version not in READABLE_VERSIONS or body.get("s") not in _SIDES:
            raise StoredFormatError(
                "a sync-events message",
                f"it is in format version {version!r}, which this version of Consent Bridge cannot read",
                "it was written by another version of Consent Bridge: deploy the same version everywhere; the "
                "next scheduled run reads the change anyway",
            )
        return cls(
            side=_SIDES[body["s"]],
            received=from_epoch(body.get("r")) or now(),
            at=from_epoch(body.get("f")),
            audience=str(body.get("a") or ""),
            type=str(body.get("t") or ""),
            member_hash=str(body.get("h") or ""),
            old_hash=str(body.get("o") or ""),
            reason=str(body.get("y") or ""),
            campaign_id=str(body.get("c") or ""),
            entity=str(body.get("e") or ""),
            record_id=str(body.get("i") or ""),
            message=str(body.get("m") or ""),
            user=str(body.get("u") or ""),
        )


class WatchedTable(Protocol):
    """A table of the product's own whose edits in Dynamics are consent changes (the audience memberships):
    ``webhooks register`` adds a step on its Update filtered to ``columns``, and its events are handed to
    ``edited`` with the product's own user (whose writes are no edit), which answers per link the member hashes
    to meet."""

    @property
    def table(self) -> str: ...

    @property
    def columns(self) -> list[str]: ...

    def edited(self, row_ids: list[str], own_user: str) -> dict[str, list[str]]: ...
