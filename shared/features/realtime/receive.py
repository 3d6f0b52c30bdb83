"""The webhook routes' core: check the secret (and Mailchimp's signature) on the raw request, read what it
names, put one small message on ``sync-events``, answer. Nothing here calls Mailchimp or Dataverse, so an answer
takes a storage write at most: well inside Mailchimp's 10 seconds and Dataverse's 60.

Answers: 200 accepted (or ignored: an audience or table no link uses, an echo of the product's own write, a
validation GET); 401 a wrong or missing secret or signature, nothing enqueued; 400 a body that cannot be read;
503 when the queue refused the message, so that the sender retries and an accepted event is never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from shared import telemetry
from shared.adapters.ports import StoragePort
from shared.adapters.storage import EVENTS_QUEUE
from shared.features.realtime.deliveries import (
    RECORD_TABLES,
    SECRET_HEADER,
    SIGNATURE_HEADER,
    UnreadableDeliveryError,
    read_dataverse,
    read_mailchimp,
    secret_matches,
    signature_problem,
)
from shared.features.realtime.events import Event, WatchedTable
from shared.features.realtime.registry import WebhookRegistry
from shared.model.times import now
from shared.settings import Settings

log = logging.getLogger("consent_bridge.webhooks")


@dataclass(frozen=True)
class Reply:
    status: int
    text: str


class Receiver:
    """Answers deliveries to ``/api/webhooks/mailchimp`` and ``/api/webhooks/dataverse``."""

    def __init__(
        self,
        settings: Settings,
        storage: StoragePort,
        registry: WebhookRegistry | None = None,
        watched: Sequence[WatchedTable] = (),
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.registry = registry or WebhookRegistry(storage)
        self.tables = RECORD_TABLES | {table.table for table in watched}  # the records, and the product's own

    def mailchimp(
        self,
        method: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        at: datetime | None = None,
    ) -> Reply:
        side = telemetry.SIDE_MAILCHIMP
        if not secret_matches(self.settings.webhook_secret, params.get("secret")):
            return self._refused(side, "the secret is wrong or missing")
        if method.upper() == "GET":
            return Reply(200, "ok")  # Mailchimp's validation request when a webhook is created
        received = at or now()
        signature = _header(headers, SIGNATURE_HEADER)
        if signature is not None:
            problem = signature_problem(signature, body, self.registry.signing_secrets().values(), received)
            if problem == "the signature does not match":  # a webhook registered since the cache was read
                problem = signature_problem(
                    signature, body, self.registry.signing_secrets(refresh=True).values(), received
                )
            if problem:
                return self._refused(side, problem)
        try:
            delivery = read_mailchimp(body)
        except UnreadableDeliveryError as exc:
            return self._unreadable(side, str(exc))
        if signature is None and delivery.audience in self.registry.signing_secrets():
            return self._refused(side, f"audience {delivery.audience}'s webhook is signed and this delivery is not")
        links = [link for link in self.settings.links if link.audience_id == delivery.audience]
        if not links or delivery.type == "campaign":
            telemetry.webhook(side, telemetry.DELIVERY_IGNORED)
            return Reply(200, "ignored: no link uses this audience" if not links else "ignored: not a member event")
        try:
            event = delivery.event(received)
        except UnreadableDeliveryError as exc:
            return self._unreadable(side, str(exc))
        return self._enqueue(side, event, link=links[0].name if len(links) == 1 else None)

    def dataverse(self, headers: Mapping[str, str], body: bytes, at: datetime | None = None) -> Reply:
        side = telemetry.SIDE_DATAVERSE
        if not secret_matches(self.settings.webhook_secret, _header(headers, SECRET_HEADER)):
            return self._refused(side, f"the {SECRET_HEADER} header is wrong or missing")
        try:
            event = read_dataverse(body, at or now())
        except UnreadableDeliveryError as exc:
            return self._unreadable(side, str(exc))
        if event.entity not in self.tables:
            telemetry.webhook(side, telemetry.DELIVERY_IGNORED)
            return Reply(200, f"ignored: the product does not sync {event.entity} rows")
        own = self.registry.own_user()
        if own and event.user == own:
            telemetry.webhook(side, telemetry.DELIVERY_ECHO)
            return Reply(200, "ignored: the product's own write")
        return self._enqueue(side, event)

    def _enqueue(self, side: str, event: Event, link: str | None = None) -> Reply:
        try:
            self.storage.send(EVENTS_QUEUE, event.encode())
        except Exception as exc:  # the sender retries a 5xx: the event is not lost
            log.error("a %s event was not queued (%s); answered 503 so that it is delivered again", side, exc)
            telemetry.webhook(side, telemetry.DELIVERY_FAILED, link=link)
            return Reply(503, "the event could not be queued; deliver it again")
        telemetry.webhook(side, telemetry.DELIVERY_ACCEPTED, link=link)
        return Reply(200, "accepted")

    def _refused(self, side: str, why: str) -> Reply:
        log.warning("a %s webhook delivery was refused: %s", side, why)
        telemetry.webhook(side, telemetry.DELIVERY_REFUSED)
        return Reply(401, "unauthorized")

    def _unreadable(self, side: str, why: str) -> Reply:
        log.warning("a %s webhook delivery could not be read: %s", side, why)
        telemetry.webhook(side, telemetry.DELIVERY_UNPARSEABLE)
        return Reply(400, f"the delivery could not be read: {why}")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None
