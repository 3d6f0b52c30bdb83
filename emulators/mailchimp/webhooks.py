"""Audience webhooks as Mailchimp sends them: the validation GET, form-encoded events, signing, retries.

What changes a member (the member rules report every write through ``WebhookEvents``) becomes one event per
registered webhook whose ``events`` and ``sources`` match, queued on the emulator's ``Outbox`` and POSTed
by its worker threads, never inside the request that caused it:

- the source is who acted: ``api`` for the REST endpoints (the product's own writes), ``user`` for what a
  person does (the ``/_admin/people/*`` routes, a campaign's unsubscribe link), ``admin`` for an admin in the
  web app (``"by": "admin"``, the bulk unsubscribe). Campaign events, and cleaned events after a bounce, are
  the service's own doing and reach every webhook that asked for that event, whatever its sources;
- the body is ``application/x-www-form-urlencoded`` with PHP-style keys: ``type``, ``fired_at``
  (``YYYY-MM-DD HH:MM:SS``, UTC, the emulator clock) and ``data[...]``: for subscribe, unsubscribe and
  profile ``data[id]`` (the member's unique_email_id), ``data[web_id]``, ``data[list_id]``, ``data[email]``,
  ``data[email_type]``, ``data[ip_opt]``, ``data[merges][EMAIL]`` and every merge field
  (``data[merges][ADDRESS][addr1]`` for an address), ``data[merges][INTERESTS]`` (interest names,
  comma-joined, when the audience has interests), ``data[ip_signup]`` on subscribe, and on unsubscribe
  ``data[action]`` (``unsub``, or ``delete`` for an archive or a permanent delete), ``data[reason]``
  (``manual``, or ``abuse`` when the person's reason says so) and ``data[campaign_id]``; upemail has
  ``data[list_id]``, ``data[new_id]``, ``data[new_email]``, ``data[old_email]``; cleaned has
  ``data[list_id]``, ``data[campaign_id]``, ``data[reason]`` (``hard``), ``data[email]``; campaign has
  ``data[id]``, ``data[subject]``, ``data[status]`` (``sent``), ``data[reason]``, ``data[list_id]``;
- headers ``User-Agent: MailChimp.com`` and, for a signed webhook, ``X-Mailchimp-Signature:
  t=<unix>,v1=<hex>`` with hex = HMAC-SHA256(signing secret, ``f"{t}.{raw body}"``), ``t`` the attempt's
  wall-clock time (not the emulator clock, which tests move);
- an answer other than 2xx, a refused connection or no answer within 10 s is tried again after 1, 2, 4, 8,
  15, 20 and 25 minutes (75 minutes in all; ``timeScale`` compresses them), then given up; a 410 disables
  the webhook (no more attempts for it, also of deliveries already queued). No delivery id, no ordering.

Registration makes a GET with ``User-Agent: MailChimp.com WebHook Validator`` to the URL; any answer but 200
refuses it with 400 Invalid Resource, ``errors[0]`` = ``{"field": "url", "message": "We couldn't verify the
URL is working. Please double check and try again. HTTP Code: <status>"}`` (0 when nothing answered; that
case's wording is unverified). A URL that is not on loopback is neither validated nor called.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import requests

from emulators.outbox import Delivery, Outbox, Outcome, is_loopback

from .audience import Audience, Member, Webhook
from .problems import invalid_resource

RETRY_MINUTES = (1, 2, 4, 8, 15, 20, 25)  # 75 minutes, "at increasing intervals"
TIMEOUT_SECONDS = 10.0
VALIDATOR_AGENT = "MailChimp.com WebHook Validator"
SENDER_AGENT = "MailChimp.com"
FORM_TYPE = "application/x-www-form-urlencoded"
SOURCES = ("user", "admin", "api")
# events the service itself causes: they reach a webhook whatever its sources
UNFILTERED = "service"


def fired_at(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def new_signing_secret() -> str:
    return secrets.token_hex(32)


def validate_url(url: str, timeout: float = TIMEOUT_SECONDS) -> None:
    """The validator's GET; anything but 200 refuses the registration as the service does."""
    if not is_loopback(url):
        return  # the emulator never leaves the machine
    try:
        status = requests.get(url, headers={"User-Agent": VALIDATOR_AGENT}, timeout=timeout).status_code
    except requests.RequestException:
        status = 0
    if status != 200:
        message = f"We couldn't verify the URL is working. Please double check and try again. HTTP Code: {status}"
        raise invalid_resource(errors=[{"field": "url", "message": message}])


def render_webhook(hook: Webhook) -> dict[str, Any]:
    """What the admin routes show of a webhook: never its signing secret."""
    return {
        "id": hook.id,
        "list_id": hook.list_id,
        "url": hook.url,
        "events": hook.events,
        "sources": hook.sources,
        "created_at": hook.created_at,
        "signing_enabled": bool(hook.signing_secret),
        "disabled": hook.disabled,
    }


class MailchimpDeliveries:
    """The service's retry rules for the outbox: the 75-minute schedule and 410 disabling the webhook."""

    default_timeout = TIMEOUT_SECONDS

    def __init__(self) -> None:
        self.hooks: dict[str, Webhook] = {}  # every webhook that ever had a delivery queued, by id
        self.outbox = Outbox("mailchimp", self)

    def sign(self, delivery: Delivery) -> dict[str, str]:
        hook = self.hooks.get(delivery.target)
        if hook is None or not hook.signing_secret:
            return {}
        return {"X-Mailchimp-Signature": signature(hook.signing_secret, int(time.time()), delivery.body)}

    def retry_after(self, delivery: Delivery, outcome: Outcome) -> float | None:
        if outcome.status == 410:
            return None
        tried = len(delivery.attempts)
        return RETRY_MINUTES[tried - 1] * 60.0 if tried <= len(RETRY_MINUTES) else None

    def settle(self, delivery: Delivery, outcome: Outcome) -> str:
        if outcome.status == 410:
            hook = self.hooks.get(delivery.target)
            if hook is not None:
                hook.disabled = True
            self.outbox.disable(delivery.target)
            return "disabled"
        return "failed"

    def finished(self, delivery: Delivery, outcome: Outcome) -> None:
        return None

    def post(self, hook: Webhook, kind: str, source: str, fields: list[tuple[str, str]], at: int) -> None:
        self.hooks[hook.id] = hook
        info = {"webhookId": hook.id, "listId": hook.list_id, "type": kind, "source": source, "firedAt": at}
        body = urlencode(fields).encode()
        headers = {"Content-Type": FORM_TYPE, "User-Agent": SENDER_AGENT}
        self.outbox.send(hook.id, hook.url, body, headers, {**info, "firedAt": fired_at(at)})


@dataclass
class _Before:
    """What a member was before a write, as far as events tell."""

    status: str
    email: str
    merges: dict[str, Any]
    interests: frozenset[str]


@dataclass
class _Acting:
    source: str = "api"
    campaign_id: str = ""
    reason: str = ""


class WebhookEvents:
    """Turns member writes into webhook events; the member rules call ``before`` and ``after`` around a write.

    Who acts is per thread (each HTTP request has its own): ``api`` unless a route says otherwise with
    ``acting``. Called under the emulator's lock; the outbox takes only its own.
    """

    def __init__(self, deliveries: MailchimpDeliveries, now: Any) -> None:
        self.deliveries = deliveries
        self.now = now
        self._local = threading.local()

    @contextmanager
    def acting(self, source: str, campaign_id: str = "", reason: str = "") -> Iterator[None]:
        previous = getattr(self._local, "acting", None)
        self._local.acting = _Acting(source, campaign_id, reason)
        try:
            yield
        finally:
            self._local.acting = previous

    def _acting(self) -> _Acting:
        return getattr(self._local, "acting", None) or _Acting()

    @staticmethod
    def before(member: Member | None) -> _Before | None:
        if member is None:
            return None
        return _Before(member.status, member.email_address, dict(member.merge_fields), frozenset(member.interests))

    def after(self, audience: Audience, member: Member, before: _Before | None, removed: bool = False) -> None:
        if not audience.webhooks:
            return
        acting = self._acting()
        for kind, source, fields in self._events(audience, member, before, removed, acting):
            self.fire(audience, kind, source, fields)

    def fire(self, audience: Audience, kind: str, source: str, fields: list[tuple[str, str]]) -> None:
        at = self.now()
        body = [("type", kind), ("fired_at", fired_at(at)), *fields]
        for hook in list(audience.webhooks.values()):
            if hook.disabled or not hook.events.get(kind):
                continue
            if source != UNFILTERED and not hook.sources.get(source):
                continue
            self.deliveries.post(hook, kind, source, body, at)

    def campaign_sent(self, audience: Audience, campaign: Any) -> None:
        fields = [
            ("data[id]", campaign.id),
            ("data[subject]", campaign.subject_line),
            ("data[status]", "sent"),
            ("data[reason]", ""),
            ("data[list_id]", audience.id),
        ]
        self.fire(audience, "campaign", UNFILTERED, fields)

    def _events(
        self, audience: Audience, member: Member, before: _Before | None, removed: bool, acting: _Acting
    ) -> list[tuple[str, str, list[tuple[str, str]]]]:
        source = acting.source
        old_status = before.status if before is not None else None
        if removed or (member.status == "archived" and old_status not in (None, "archived")):
            return [("unsubscribe", source, self._member_fields(audience, member, "unsubscribe", acting, "delete"))]
        events = []
        if before is not None and before.email.lower() != member.email_address.lower():
            events.append(("upemail", source, self._upemail_fields(audience, member, before)))
        if member.status != old_status:
            if member.status == "subscribed":
                events.append(("subscribe", source, self._member_fields(audience, member, "subscribe", acting)))
            elif member.status == "unsubscribed" and old_status is not None:
                events.append(("unsubscribe", source, self._member_fields(audience, member, "unsubscribe", acting)))
            elif member.status == "cleaned" and old_status is not None:
                cleaned = [
                    ("data[list_id]", audience.id),
                    ("data[campaign_id]", acting.campaign_id),
                    ("data[reason]", "hard"),
                    ("data[email]", member.email_address),
                ]
                events.append(("cleaned", UNFILTERED if acting.source == "user" else source, cleaned))
        elif before is not None and self._profile_changed(before, member):
            events.append(("profile", source, self._member_fields(audience, member, "profile", acting)))
        return events

    @staticmethod
    def _profile_changed(before: _Before, member: Member) -> bool:
        changed = before.merges != member.merge_fields or before.interests != member.interests
        return changed and member.status in ("subscribed", "pending", "unsubscribed")

    @staticmethod
    def _upemail_fields(audience: Audience, member: Member, before: _Before) -> list[tuple[str, str]]:
        return [
            ("data[list_id]", audience.id),
            ("data[new_id]", member.unique_email_id),
            ("data[new_email]", member.email_address),
            ("data[old_email]", before.email),
        ]

    @staticmethod
    def _member_fields(
        audience: Audience, member: Member, kind: str, acting: _Acting, action: str = "unsub"
    ) -> list[tuple[str, str]]:
        fields = [
            ("data[id]", member.unique_email_id),
            ("data[web_id]", str(member.web_id)),
            ("data[list_id]", audience.id),
            ("data[email]", member.email_address),
            ("data[email_type]", member.email_type),
            ("data[ip_opt]", member.ip_opt),
        ]
        if kind == "subscribe":
            fields.append(("data[ip_signup]", member.ip_signup))
        fields.append(("data[merges][EMAIL]", member.email_address))
        for merge in audience.merge_fields:
            value = member.merge_fields.get(merge.tag, "")
            if isinstance(value, dict):
                fields += [(f"data[merges][{merge.tag}][{k}]", str(v)) for k, v in value.items()]
            else:
                fields.append((f"data[merges][{merge.tag}]", "" if value is None else str(value)))
        if audience.interests:
            names = [audience.interests[i].name for i in audience.interest_ids() if i in member.interests]
            fields.append(("data[merges][INTERESTS]", ",".join(names)))
        if kind == "unsubscribe":
            reason = "abuse" if "abuse" in acting.reason.lower() or "spam" in acting.reason.lower() else "manual"
            fields += [("data[action]", action), ("data[reason]", reason), ("data[campaign_id]", acting.campaign_id)]
        return fields
