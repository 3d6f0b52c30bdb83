"""Checking and reading a webhook delivery: the shared secret and Mailchimp's signature first, on the raw bytes,
then the body (Mailchimp's form-encoded fields, Dataverse's RemoteExecutionContext JSON).

Nothing here does I/O; a delivery that cannot be read raises UnreadableDeliveryError with what was wrong (never the
body: it holds addresses).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

from shared.features.realtime.events import DATAVERSE, MAILCHIMP, Event
from shared.model.times import parse_time
from shared.rules.addresses import member_hash, normalize_email

SIGNATURE_HEADER = "x-mailchimp-signature"
SECRET_HEADER = "x-consent-bridge-secret"  # noqa: S105 - the header's name, not a secret
SIGNATURE_TOLERANCE = timedelta(minutes=5)
MEMBER_EVENTS = frozenset({"subscribe", "unsubscribe", "profile", "upemail", "cleaned"})
MAILCHIMP_EVENTS = MEMBER_EVENTS | {"campaign"}
RECORD_TABLES = frozenset({"contact", "lead", "account"})
_DATE = re.compile(r"/Date\((-?\d+)([+-]\d{4})?\)/")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class UnreadableDeliveryError(ValueError):
    """The body is not a delivery this route takes; the message says what was missing (no personal data)."""


def secret_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; no secret configured matches nothing."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def signature_problem(header: str, raw: bytes, signing_secrets: Iterable[str], now: datetime) -> str | None:
    """None when ``X-Mailchimp-Signature: t=<unix>,v1=<hex>`` is HMAC-SHA256 of ``"{t}.{raw}"`` under one of the
    signing secrets and ``t`` is within five minutes of ``now``; otherwise what is wrong."""
    parts = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    if not stamp.isdigit() or not given:
        return "the signature header is not t=<unix time>,v1=<hex>"
    sent = datetime.fromtimestamp(int(stamp), UTC)
    if abs(now - sent) > SIGNATURE_TOLERANCE:
        return "the signature's timestamp is more than five minutes away"
    message = stamp.encode() + b"." + raw
    for secret in signing_secrets:
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, given.lower()):
            return None
    return "the signature does not match"


def sign(secret: str, raw: bytes, at: datetime) -> str:
    """The header value Mailchimp sends for this body at this time (for tests and the benchmark's forgeries)."""
    stamp = str(int(at.timestamp()))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


@dataclass(frozen=True)
class MailchimpDelivery:
    type: str
    audience: str
    fired_at: datetime | None
    email: str | None  # normalised; the new address for upemail
    old_email: str | None  # upemail only
    reason: str = ""  # unsubscribe and cleaned: data[reason] (manual, abuse, hard)
    campaign_id: str = ""  # unsubscribe and cleaned: data[campaign_id], the campaign that caused it

    def event(self, received: datetime) -> Event:
        if self.email is None:
            raise UnreadableDeliveryError(f"a {self.type} delivery without a usable address")
        return Event(
            MAILCHIMP,
            received,
            self.fired_at,
            audience=self.audience,
            type=self.type,
            member_hash=member_hash(self.email),
            old_hash=member_hash(self.old_email) if self.old_email else "",
            reason=self.reason,
            campaign_id=self.campaign_id,
        )


def read_mailchimp(raw: bytes) -> MailchimpDelivery:
    """The fields of a form-encoded audience webhook delivery (``type``, ``fired_at``, ``data[...]``)."""
    try:
        text = raw.decode("utf-8")
        fields = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)))
    except (UnicodeDecodeError, ValueError):
        raise UnreadableDeliveryError("the body is not form-encoded text") from None
    kind = fields.get("type", "")
    if kind not in MAILCHIMP_EVENTS:
        raise UnreadableDeliveryError(f"the type {kind[:20]!r} is not an audience webhook event" if kind else "no type")
    audience = fields.get("data[list_id]", "")
    if not re.fullmatch(r"[A-Za-z0-9]{1,64}", audience):
        raise UnreadableDeliveryError("data[list_id] is missing or not an audience id")
    fired = fields.get("fired_at", "")
    fired_at = parse_time(fired.replace(" ", "T")) if fired else None
    if kind == "upemail":
        email = normalize_email(fields.get("data[new_email]"))
        old = normalize_email(fields.get("data[old_email]"))
        if email is None or old is None:
            raise UnreadableDeliveryError("an upemail delivery needs data[new_email] and data[old_email]")
        return MailchimpDelivery(kind, audience, fired_at, email, old)
    email = normalize_email(fields.get("data[email]"))
    if kind != "campaign" and email is None:
        raise UnreadableDeliveryError(f"a {kind} delivery without data[email]")
    if kind not in ("unsubscribe", "cleaned"):
        return MailchimpDelivery(kind, audience, fired_at, email, None)
    reason = fields.get("data[reason]", "").strip()[:20]
    campaign = fields.get("data[campaign_id]", "").strip()
    return MailchimpDelivery(
        kind, audience, fired_at, email, None, reason, campaign if re.fullmatch(r"[A-Za-z0-9]{1,64}", campaign) else ""
    )


def read_dataverse(raw: bytes, received: datetime) -> Event:
    """The event a RemoteExecutionContext names: table, record id, message, initiating user, operation time."""
    try:
        context = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise UnreadableDeliveryError("the body is not JSON") from None
    if not isinstance(context, dict):
        raise UnreadableDeliveryError("the body is not a RemoteExecutionContext object")
    entity = context.get("PrimaryEntityName")
    record_id = str(context.get("PrimaryEntityId") or "")
    message = context.get("MessageName")
    user = str(context.get("InitiatingUserId") or context.get("UserId") or "")
    if not isinstance(entity, str) or not entity or not isinstance(message, str) or not message:
        raise UnreadableDeliveryError("PrimaryEntityName or MessageName is missing")
    if not _GUID.match(record_id):
        raise UnreadableDeliveryError("PrimaryEntityId is not a GUID")
    return Event(
        DATAVERSE,
        received,
        operation_time(context.get("OperationCreatedOn")),
        entity=entity.lower(),
        record_id=record_id.lower(),
        message=message,
        user=user.lower(),
    )


def operation_time(value: object) -> datetime | None:
    """``/Date(1700000000000)/`` or ``/Date(1700000000000-0700)/`` (milliseconds since the epoch, UTC) or ISO."""
    if isinstance(value, str):
        found = _DATE.fullmatch(value.strip())
        if found:
            return datetime.fromtimestamp(int(found.group(1)) / 1000, UTC)
    return parse_time(value)
