"""The product's one door to the Mailchimp Marketing API.

A thin adapter over the pinned official client ``mailchimp-marketing==3.0.80`` that keeps the
client's quirks in this module, so the sync engine never sees HTTP:

- the client rewrites the substring ``server`` anywhere in the URL: the API root is set on
  ``api_client.host``, the rewrite is switched off, a root containing "server" is refused, and
  members are always addressed by their MD5 ``subscriber_hash``;
- error responses with an empty body (429, 403) and every 204 come back as a raw
  ``requests.Response`` instead of raising: they are normalised here;
- ``ApiClientError.text`` is usually a problem+json *string* and ``str(err)`` is empty: it becomes a
  typed ``MailchimpError`` that names the member by hash and never carries an email address;
- ``fields``/``exclude_fields`` must be lists (a string is sent character by character);
- datetimes go out as ``YYYY-MM-DDTHH:MM:SS+00:00``; ``count`` is at most 1,000;
- 429, 5xx, HTML 502s and network errors are retried with bounded, jittered exponential backoff;
- at most ``max_connections`` requests per API key are in flight in one process (Mailchimp
  allows 10 simultaneous connections per user).

Longer than 500 lines because it is the one door to the Marketing API: every call the product makes goes
through the same request loop, connection cap and error shaping, and each quirk sits beside the call it affects.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import re
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from http import HTTPStatus
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import mailchimp_marketing as MailchimpMarketing  # noqa: N812 - the client's documented import name
import requests
from mailchimp_marketing.api_client import ApiClientError

from shared.errors import ConfigurationError
from shared.rules import addresses
from shared.settings import LOOPBACK_HOSTS

log = logging.getLogger(__name__)

PAGE_SIZE_MAX = 1000  # the API's maximum `count`
BATCH_SUBSCRIBE_MAX = 500  # members per POST /lists/{list_id}
SEGMENT_BATCH_MAX = 500  # emails per members_to_add / members_to_remove
BACKOFF_CAP_SECONDS = 30.0

WRITABLE_STATUSES = frozenset({"subscribed", "unsubscribed", "cleaned", "pending", "transactional"})
PATCH_STATUSES = frozenset({"subscribed", "unsubscribed", "cleaned", "pending"})  # the spec has no transactional
MEMBER_STATUSES = WRITABLE_STATUSES | {"archived"}

# Request body fields the official schema allows, per operation.
_MEMBER_WRITE_FIELDS = frozenset(
    {
        "email_address",
        "email_type",
        "interests",
        "ip_opt",
        "ip_signup",
        "language",
        "location",
        "marketing_permissions",
        "merge_fields",
        "status",
        "timestamp_opt",
        "timestamp_signup",
        "vip",
    }
)
_PUT_FIELDS = _MEMBER_WRITE_FIELDS | {"status_if_new"}
_PATCH_FIELDS = _MEMBER_WRITE_FIELDS
_BATCH_MEMBER_FIELDS = frozenset(
    {
        "email_address",
        "email_type",
        "interests",
        "ip_opt",
        "ip_signup",
        "language",
        "location",
        "merge_fields",
        "status",
        "status_if_new",
        "tags",
        "timestamp_opt",
        "timestamp_signup",
        "vip",
    }
)
_TIMESTAMP_FIELDS = ("timestamp_opt", "timestamp_signup")
WEBHOOK_EVENTS = frozenset(
    {
        "subscribe",
        "unsubscribe",
        "profile",
        "cleaned",
        "upemail",
        "campaign",
        "sms_subscribe",
        "sms_unsubscribe",
        "upsms",
        "sms_campaign",
    }
)
WEBHOOK_SOURCES = frozenset({"user", "admin", "api"})
_BATCH_OPERATION_FIELDS = frozenset({"method", "path", "params", "body", "operation_id"})
_BATCH_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

# The titles of Mailchimp's per-member refusals (400 problem documents), which the engine audits and skips.
COMPLIANCE_STATE = "Member In Compliance State"
FORGOTTEN_EMAIL = "Forgotten Email Not Subscribed"
MEMBER_EXISTS = "Member Exists"
INVALID_RESOURCE = "Invalid Resource"
MEMBER_REFUSAL_TITLES = frozenset({COMPLIANCE_STATE, FORGOTTEN_EMAIL, MEMBER_EXISTS, INVALID_RESOURCE})
# batch subscribe's errors[].error_code: the whole documented enum
CONTACT_EXISTS_CODE = "ERROR_CONTACT_EXISTS"
GENERIC_ERROR_CODE = "ERROR_GENERIC"

# Why Mailchimp refused a member, as the audit records it.
MailchimpRefusal = Literal["member-in-compliance-state", "forgotten-email", "invalid-address", "mailchimp-refused"]
_REFUSAL_BY_TITLE: dict[str, MailchimpRefusal] = {
    COMPLIANCE_STATE: "member-in-compliance-state",
    FORGOTTEN_EMAIL: "forgotten-email",
    INVALID_RESOURCE: "invalid-address",
}

_DATA_CENTER = re.compile(r"^[a-z]+[0-9]+$")
_HINTS = {
    401: "Check MAILCHIMP_API_KEY",
    403: "Check that MAILCHIMP_API_KEY belongs to a user allowed to manage this audience",
    404: "Check the audience id in SYNC_LINKS and that the resource still exists",
    429: "Mailchimp is throttling; lower MAILCHIMP_MAX_CONNECTIONS or run less often",
}


# ---- values ---------------------------------------------------------------------------------


def mailchimp_time(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS+00:00``: the one form every Mailchimp filter parses (no fractions)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("Mailchimp times must be timezone-aware; a naive datetime is ambiguous")
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _require_hash(hashed: str) -> str:
    if not isinstance(hashed, str) or not addresses.is_member_hash(hashed):
        # the value itself is not echoed: it may be an email address
        raise ValueError(
            "member_hash must be Mailchimp's subscriber_hash (32 lower-case hex digits): "
            "pass member_hash(email), never the address itself"
        )
    return hashed


def _field_list(fields: Iterable[str] | str | None) -> list[str] | None:
    """A list for the client's csv join; a comma string is split here, not character by character."""
    if fields is None:
        return None
    items = fields.split(",") if isinstance(fields, str) else list(fields)
    return [item.strip() for item in items if item.strip()]


def _page_size(page_size: int) -> int:
    if not 1 <= page_size <= PAGE_SIZE_MAX:
        raise ValueError(f"page_size must be between 1 and {PAGE_SIZE_MAX} (Mailchimp's maximum count)")
    return page_size


def _params(**params: Any) -> dict[str, Any]:
    # the client compares `count > 1000` even when given None, so unset parameters are left out
    return {name: value for name, value in params.items() if value is not None}


# ---- errors and results ---------------------------------------------------------------------


class MailchimpError(Exception):
    """A request Mailchimp refused or could not answer, without any email address in it."""

    def __init__(
        self,
        status: int | None,
        title: str,
        detail: str,
        *,
        member_hash: str | None = None,
        errors: list[dict[str, str]] | None = None,
        operation: str = "",
        retryable: bool = False,
        attempts: int = 1,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.member_hash = member_hash
        self.errors = errors or []
        self.operation = operation
        self.retryable = retryable
        self.attempts = attempts
        super().__init__(self._message())

    @property
    def is_member_refusal(self) -> bool:
        """A per-member refusal (compliance state, forgotten, invalid address): audit and skip."""
        return self.status == 400 and self.title in MEMBER_REFUSAL_TITLES

    @property
    def is_member_exists(self) -> bool:
        """The address is already a member of the audience, so it cannot be added or moved to.

        Mailchimp answers "Member Exists" to a POST (and to a PUT whose body names another member); an address
        change onto a taken address comes back as "Invalid Resource" whose ``errors`` name the email_address
        field ("... is already in this list with a status of ...")."""
        if self.status != 400:
            return False
        if self.title == MEMBER_EXISTS:
            return True
        return self.title == INVALID_RESOURCE and any(item.get("field") == "email_address" for item in self.errors)

    @property
    def refusal(self) -> MailchimpRefusal:
        """Why Mailchimp refused the member, from the problem's title (see mailchimp_refusal)."""
        return mailchimp_refusal(self)

    def _message(self) -> str:
        where = f"Mailchimp {self.operation}" if self.operation else "Mailchimp"
        status = self.status if self.status is not None else "no response"
        text = f"{where} failed ({status} {self.title})"
        if self.member_hash:
            text += f" for member {self.member_hash}"
        if self.detail:
            text += f": {self.detail}"
        for item in self.errors:
            text += f"; {item.get('field') or 'body'}: {item.get('message', '')}"
        if self.attempts > 1:
            text += f" (after {self.attempts} attempts)"
        hint = _HINTS.get(self.status or 0)
        if hint:
            text = f"{text.rstrip('.')}. {hint}"
        return text


@dataclass(frozen=True)
class MemberError:
    """One member refused inside a bulk call, named by hash."""

    member_hash: str | None
    error: str
    error_code: str | None = None
    field: str | None = None
    field_message: str | None = None

    @property
    def refusal(self) -> MailchimpRefusal:
        """Why Mailchimp refused the member (see mailchimp_refusal)."""
        return mailchimp_refusal(self)


def mailchimp_refusal(refused: MailchimpError | MemberError) -> MailchimpRefusal:
    """Why Mailchimp refused a member, as the audit records it.

    A single-member call says it in the problem's title: "Member In Compliance State" ->
    member-in-compliance-state, "Forgotten Email Not Subscribed" -> forgotten-email, "Invalid Resource" ->
    invalid-address; any other answer -> mailchimp-refused. Batch subscribe has only two error codes:
    ERROR_CONTACT_EXISTS (-> mailchimp-refused) and ERROR_GENERIC, which covers every other refusal and
    carries the problem's detail as its ``error`` text, so for it (and for the segment calls, which give no
    code) the detail's wording is the only signal there is.
    """
    if isinstance(refused, MailchimpError):
        if refused.status != 400:
            return "mailchimp-refused"
        return _REFUSAL_BY_TITLE.get(refused.title, "mailchimp-refused")
    if refused.error_code == CONTACT_EXISTS_CODE:
        return "mailchimp-refused"
    return _refusal_from_detail(refused.error)


def _refusal_from_detail(detail: str) -> MailchimpRefusal:
    """The refusal a batch error's text describes, in the words of the titled problems' details
    ("is in a compliance state", "was permanently deleted", "looks fake or invalid")."""
    text = detail.lower()
    if "compliance" in text:
        return "member-in-compliance-state"
    if "forgotten" in text or "permanently deleted" in text:
        return "forgotten-email"
    if "fake" in text or "invalid" in text:
        return "invalid-address"
    return "mailchimp-refused"


@dataclass
class BatchResult:
    """What a batch subscribe did, summed over every call it took."""

    new_members: list[dict[str, Any]] = field(default_factory=list)
    updated_members: list[dict[str, Any]] = field(default_factory=list)
    errors: list[MemberError] = field(default_factory=list)
    calls: int = 0


@dataclass
class TagMembersResult:
    """What a bulk tag change did: how many members changed, and who was refused."""

    changed: int = 0
    errors: list[MemberError] = field(default_factory=list)
    calls: int = 0


class HeldSlot(Protocol):
    """A slot of the cross-instance connection cap, held for one request."""

    def abandon(self) -> None:
        """The request timed out on our side: the slot stays taken until its lease ends."""


# a cap shared by every instance of the app (shared.adapters.limiter.ConnectionSlots.slot)
SharedSlot = Callable[[], AbstractContextManager[HeldSlot]]
# told how long a throttled request waits before it is sent again
ThrottleObserver = Callable[[float], None]


class MailchimpSettings(Protocol):
    """The part of the product settings the adapter reads."""

    @property
    def mailchimp_api_key(self) -> str: ...

    @property
    def mailchimp_base_url(self) -> str | None: ...

    @property
    def mailchimp_max_connections(self) -> int: ...


# ---- the process-wide connection cap --------------------------------------------------------


class _ConnectionGate:
    """Counts requests in flight for one API key; the strictest cap any adapter asked for wins."""

    def __init__(self, limit: int) -> None:
        self._condition = threading.Condition()
        self.limit = limit
        self.in_flight = 0
        self.peak = 0

    def tighten(self, limit: int) -> None:
        with self._condition:
            self.limit = min(self.limit, limit)

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._condition:
            while self.in_flight >= self.limit:
                self._condition.wait()
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            with self._condition:
                self.in_flight -= 1
                self._condition.notify()


_GATES: dict[str, _ConnectionGate] = {}
_GATES_LOCK = threading.Lock()


def _gate_for(api_key: str, limit: int) -> _ConnectionGate:
    # keyed by a digest so the secret is never a dictionary key someone might print
    key = hashlib.sha256(api_key.encode("utf-8")).hexdigest()
    with _GATES_LOCK:
        gate = _GATES.get(key)
        if gate is None:
            gate = _GATES[key] = _ConnectionGate(limit)
        else:
            gate.tighten(limit)
        return gate


# ---- one attempt's outcome ------------------------------------------------------------------


@dataclass
class _Failure:
    status: int | None  # None: no HTTP answer (network error, timeout)
    body: Any  # dict, str, or an exception for network errors

    @property
    def retryable(self) -> bool:
        if self.status is None or self.status == 429 or self.status >= 500:
            return True
        # Mailchimp answers 403 with no body when it sheds load at high volume
        return self.status == 403 and not self.body


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _problem(failure: _Failure, email: str | None = None) -> tuple[str, str, list[dict[str, str]]]:
    """(title, detail, errors) from a failure, with every email address replaced by its hash."""
    body = failure.body
    if failure.status is None:
        return "Network Error", addresses.redact_emails(f"{type(body).__name__}: {body}"), []
    if isinstance(body, str) and body.strip():
        try:
            body = json.loads(body)
        except ValueError:
            kind = "an HTML" if "<html" in body.lower() else "a non-JSON"
            detail = f"Mailchimp answered with {kind} body"
            if failure.status == 502:
                detail += " (the call probably ran past the 120 s limit and was closed by the CDN)"
            return _phrase(failure.status), detail, []
    if not isinstance(body, Mapping):
        return _phrase(failure.status), "empty response body", []

    def clean(text: Any) -> str:
        text = str(text or "")
        # the member's own address first, whatever its case, then anything that looks like one
        if email and email.strip():
            text = re.sub(re.escape(email.strip()), f"member {addresses.member_hash(email)}", text, flags=re.IGNORECASE)
        return addresses.redact_emails(text)

    title = clean(body.get("title")) or "Error"
    detail = clean(body.get("detail"))
    errors = [
        {"field": clean(item.get("field")), "message": clean(item.get("message"))}
        for item in body.get("errors") or []
        if isinstance(item, Mapping)
    ]
    return title, detail, errors


# ---- the adapter ----------------------------------------------------------------------------


class Mailchimp:
    """The Mailchimp calls the product makes, with retries, a connection cap and typed errors."""

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        max_connections: int = 8,
        timeout: float = 120,
        max_attempts: int = 6,
        backoff_seconds: float = 0.5,
    ) -> None:
        if not api_key or not api_key.strip():
            raise ConfigurationError("MAILCHIMP_API_KEY", "is empty", "set it to the API key, in the form <key>-<dc>")
        if max_connections < 1:
            raise ConfigurationError(
                "MAILCHIMP_MAX_CONNECTIONS", "must be at least 1", "set 1 to 10 (Mailchimp allows 10 per user)"
            )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        api_key = api_key.strip()
        self.base_url = _api_root(api_key, base_url)
        self.max_connections = max_connections
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self._gate = _gate_for(api_key, max_connections)
        # set by the engine: a cap shared by every instance (use_shared_slot), and a throttling observer
        self.shared_slot: SharedSlot | None = None
        self.on_throttle: ThrottleObserver | None = None
        self._client = MailchimpMarketing.Client()
        # "server": "" turns off the client's url.replace('server', dc); the host below is already final
        self._client.set_config({"api_key": api_key, "server": "", "timeout": timeout})
        self._client.api_client.host = self.base_url
        # the service's clock, from the Date header of the latest answer: watermarks are set on it
        self.last_server_time: datetime | None = None
        self._segments: dict[tuple[str, str], str] = {}
        send = self._client.api_client.request

        def request_noting_the_time(*args: Any, **kwargs: Any) -> requests.Response:
            response = send(*args, **kwargs)
            self.last_server_time = _server_time(response) or self.last_server_time
            return response

        self._client.api_client.request = request_noting_the_time

    @classmethod
    def from_settings(cls, settings: MailchimpSettings) -> Mailchimp:
        return cls(
            settings.mailchimp_api_key, settings.mailchimp_base_url, max_connections=settings.mailchimp_max_connections
        )

    def __repr__(self) -> str:
        return f"Mailchimp(base_url={self.base_url!r}, max_connections={self.max_connections})"

    def use_shared_slot(self, slot: SharedSlot | None) -> None:
        """Every request also holds one of these slots (a cap across every instance of the app)."""
        self.shared_slot = slot

    def set_throttle_observer(self, observer: ThrottleObserver | None) -> None:
        """``observer(wait_seconds)`` is called each time Mailchimp throttles a request (429) before the retry."""
        self.on_throttle = observer

    @property
    def peak_connections(self) -> int:
        """The most requests this process had in flight at once with this API key."""
        return self._gate.peak

    # ---- the request loop ----

    def _call(
        self,
        operation: str,
        send: Callable[[], Any],
        *,
        member_hash: str | None = None,
        email: str | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """One API call through the connection cap, retried while Mailchimp says it may succeed later."""
        for attempt in range(1, self.max_attempts + 1):
            shared: AbstractContextManager[HeldSlot | None] = self.shared_slot() if self.shared_slot else nullcontext()
            with self._gate.slot(), shared as lease:
                outcome = _attempt(send)
                if lease is not None and isinstance(outcome, _Failure) and isinstance(outcome.body, requests.Timeout):
                    lease.abandon()  # Mailchimp may still be working on it: the slot stays taken until its lease ends
            if not isinstance(outcome, _Failure):
                return outcome
            if missing_ok and outcome.status == 404:
                return None
            if outcome.retryable and attempt < self.max_attempts:
                delay = min(BACKOFF_CAP_SECONDS, self.backoff_seconds * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                log.warning(
                    "Mailchimp %s answered %s%s; retry %d of %d in %.2f s",
                    operation,
                    outcome.status or "no response",
                    f" for member {member_hash}" if member_hash else "",
                    attempt,
                    self.max_attempts - 1,
                    delay,
                )
                if outcome.status == 429 and self.on_throttle is not None:
                    self.on_throttle(delay)
                time.sleep(delay)
                continue
            title, detail, errors = _problem(outcome, email)
            error = MailchimpError(
                outcome.status,
                title,
                detail,
                member_hash=member_hash,
                errors=errors,
                operation=operation,
                retryable=outcome.retryable,
                attempts=attempt,
            )
            if outcome.status is None and isinstance(outcome.body, BaseException):
                raise error from outcome.body
            raise error from None  # the client's exception holds the raw body, email addresses included
        raise AssertionError("unreachable")  # pragma: no cover

    def _pages(
        self, operation: str, fetch: Callable[[int, int], Any], items_key: str, page_size: int
    ) -> Iterator[list[dict[str, Any]]]:
        """Offset paging: stops on a short page or when ``total_items`` is reached."""
        offset = 0
        while True:
            page = self._call(operation, partial(fetch, offset, page_size)) or {}
            items = page.get(items_key) or []
            total = page.get("total_items")
            if items:
                yield items
            offset += len(items)
            if len(items) < page_size or (isinstance(total, int) and offset >= total):
                return

    # ---- account and audience ----

    def ping(self) -> None:
        """Raises MailchimpError unless the API answers with this key."""
        self._call("GET ping", lambda: self._client.ping.get())

    def audience(self, list_id: str) -> dict[str, Any]:
        return self._call("GET audience", lambda: self._client.lists.get_list(list_id))

    # ---- members ----

    def iter_member_pages(
        self,
        list_id: str,
        *,
        since_last_changed: datetime | None,
        fields: list[str],
        status: str | None = None,
        page_size: int = PAGE_SIZE_MAX,
        newest_first: bool = False,
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of members changed since a time, oldest change first (or newest first).

        ``fields`` are member fields (``email_address`` or ``members.email_address``); ``total_items``
        is always requested so paging knows when to stop. Newest first is the safe order while people keep
        changing: a member who changes during the read moves to the front, so later offsets read one member
        twice instead of skipping one.
        """
        if status is not None and status not in MEMBER_STATUSES:
            raise ValueError(f"status must be one of {sorted(MEMBER_STATUSES)}")
        page_size = _page_size(page_size)
        wanted = [
            name if name.startswith("members.") or name in ("total_items", "list_id", "_links") else f"members.{name}"
            for name in _field_list(fields) or []
        ]
        if wanted and "total_items" not in wanted:
            wanted.append("total_items")
        since = mailchimp_time(since_last_changed) if since_last_changed is not None else None

        def fetch(offset: int, count: int) -> Any:
            return self._client.lists.get_list_members_info(
                list_id,
                **_params(
                    fields=wanted or None,
                    count=count,
                    offset=offset,
                    status=status,
                    since_last_changed=since,
                    sort_field="last_changed",
                    sort_dir="DESC" if newest_first else "ASC",
                ),
            )

        yield from self._pages("GET members", fetch, "members", page_size)

    def member(self, list_id: str, member_hash: str, *, fields: list[str] | None = None) -> dict[str, Any] | None:
        """The member, or None when the audience has no member with this hash."""
        _require_hash(member_hash)
        return self._call(
            "GET member",
            lambda: self._client.lists.get_list_member(list_id, member_hash, **_params(fields=_field_list(fields))),
            member_hash=member_hash,
            missing_ok=True,
        )

    def upsert_member(
        self,
        list_id: str,
        email: str,
        *,
        status_if_new: str,
        status: str | None = None,
        interests: Mapping[str, bool] | None = None,
        merge_fields: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """PUT: adds the member with ``status_if_new``, or updates it (``status`` only when given)."""
        if not email.strip():
            raise ValueError("an empty email address has no subscriber hash")
        member_hash = addresses.member_hash(email)
        body = _member_body(
            {
                "email_address": email.strip(),
                "status_if_new": status_if_new,
                "status": status,
                "interests": interests,
                "merge_fields": merge_fields,
            },
            _PUT_FIELDS,
            WRITABLE_STATUSES,
        )
        return self._call(
            "PUT member",
            lambda: self._client.lists.set_list_member(list_id, member_hash, body),
            member_hash=member_hash,
            email=email,
        )

    def update_member(self, list_id: str, member_hash: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH: status or email address changes of an existing member."""
        _require_hash(member_hash)
        body = _member_body(changes, _PATCH_FIELDS, PATCH_STATUSES)
        if not body:
            raise ValueError("update_member needs at least one change")
        return self._call(
            "PATCH member",
            lambda: self._client.lists.update_list_member(list_id, member_hash, body),
            member_hash=member_hash,
            email=body.get("email_address"),
        )

    def archive_member(self, list_id: str, member_hash: str) -> None:
        """DELETE: archives the member (history kept; not a permanent delete)."""
        _require_hash(member_hash)
        self._call(
            "DELETE member",
            lambda: self._client.lists.delete_list_member(list_id, member_hash),
            member_hash=member_hash,
        )

    def delete_member_permanently(self, list_id: str, member_hash: str) -> bool:
        """POST .../actions/delete-permanent: erases the member; True when it was there, False when the audience
        holds no such member (never there, or already forgotten: nothing left to erase)."""
        _require_hash(member_hash)

        def send() -> Any:
            result = self._client.lists.delete_list_member_permanent(list_id, member_hash)
            if isinstance(result, requests.Response) and result.ok and not result.content:
                return {"deleted": True}  # the 204: told apart from the 404 that missing_ok turns into None
            return result

        try:
            answer = self._call("POST delete-permanent", send, member_hash=member_hash, missing_ok=True)
        except MailchimpError as exc:
            if exc.status == 400 and exc.title == FORGOTTEN_EMAIL:
                return False
            raise
        return answer is not None

    def batch_subscribe(
        self, list_id: str, members: list[Mapping[str, Any]], *, update_existing: bool = True
    ) -> BatchResult:
        """POST /lists/{list_id} in calls of at most 500 members; refusals come back per member."""
        bodies = [_batch_member(member) for member in members]
        result = BatchResult()
        for start in range(0, len(bodies), BATCH_SUBSCRIBE_MAX):
            chunk = bodies[start : start + BATCH_SUBSCRIBE_MAX]
            body = {"members": chunk, "update_existing": update_existing}
            answer = (
                self._call("POST batch subscribe", partial(self._client.lists.batch_list_members, list_id, body)) or {}
            )
            result.calls += 1
            result.new_members += answer.get("new_members") or []
            result.updated_members += answer.get("updated_members") or []
            result.errors += [_member_error(item) for item in answer.get("errors") or []]
        return result

    # ---- tags ----

    def update_member_tags(self, list_id: str, member_hash: str, tags: Mapping[str, bool]) -> None:
        """Tags on (True) or off (False) for one member; the tag is created when first set on."""
        _require_hash(member_hash)
        if not tags:
            return  # Mailchimp refuses an empty tag list, and there is nothing to change
        body = {"tags": [{"name": name, "status": "active" if on else "inactive"} for name, on in tags.items()]}
        self._call(
            "POST member tags",
            lambda: self._client.lists.update_list_member_tags(list_id, member_hash, body),
            member_hash=member_hash,
        )

    def tag_segment_id(self, list_id: str, tag_name: str) -> str | None:
        """The id of the static segment behind a tag, or None when the audience has no such tag.

        Found ids are kept: a tag's segment keeps its id, so each batch need not look it up again."""
        known = self._segments.get((list_id, tag_name))
        if known is not None:
            return known
        found = self._find_segment(list_id, tag_name)
        if found is not None:
            self._segments[(list_id, tag_name)] = found
        return found

    def _find_segment(self, list_id: str, tag_name: str) -> str | None:
        def fetch(offset: int, count: int) -> Any:
            return self._client.lists.list_segments(
                list_id,
                type="static",
                count=count,
                offset=offset,
                fields=["segments.id", "segments.name", "total_items"],
            )

        same_but_case = None  # the tag as the user typed it in another case, if no exact match
        for page in self._pages("GET segments", fetch, "segments", PAGE_SIZE_MAX):
            for segment in page:
                name = str(segment.get("name", "")).strip()
                if name == tag_name.strip():
                    return str(segment["id"])
                if same_but_case is None and name.lower() == tag_name.strip().lower():
                    same_but_case = str(segment["id"])
        return same_but_case

    def add_tag_members(self, list_id: str, tag_name: str, emails: Iterable[str]) -> TagMembersResult:
        """Puts the tag on these members, 500 per call; the tag must exist (see update_member_tags)."""
        return self._segment_members(list_id, tag_name, emails, "members_to_add")

    def remove_tag_members(self, list_id: str, tag_name: str, emails: Iterable[str]) -> TagMembersResult:
        """Takes the tag off these members, 500 per call; nothing to do when the tag does not exist."""
        return self._segment_members(list_id, tag_name, emails, "members_to_remove")

    def _segment_members(self, list_id: str, tag_name: str, emails: Iterable[str], key: str) -> TagMembersResult:
        emails_sorted = sorted({email.strip() for email in emails if email and email.strip()})
        result = TagMembersResult()
        if not emails_sorted:
            return result
        segment_id = self.tag_segment_id(list_id, tag_name)
        if segment_id is None:
            if key == "members_to_add":
                raise MailchimpError(
                    404,
                    "Tag Not Found",
                    f"the audience has no tag {tag_name!r}; set it on one member with update_member_tags first",
                    operation="POST segment members",
                )
            return result
        changed_key = "total_added" if key == "members_to_add" else "total_removed"
        for start in range(0, len(emails_sorted), SEGMENT_BATCH_MAX):
            body = {key: emails_sorted[start : start + SEGMENT_BATCH_MAX]}
            try:
                answer = (
                    self._call(
                        "POST segment members",
                        partial(self._client.lists.batch_segment_members, body, list_id, segment_id),
                    )
                    or {}
                )
            except MailchimpError as exc:
                if exc.status == 404:  # the tag was deleted (and maybe made again): look it up afresh next time
                    self._segments.pop((list_id, tag_name), None)
                raise
            result.calls += 1
            result.changed += int(answer.get(changed_key) or 0)
            for item in answer.get("errors") or []:
                message = addresses.redact_emails(str(item.get("error", "")))
                result.errors += [
                    MemberError(addresses.member_hash(address), message)
                    for address in item.get("email_addresses") or []
                    if address
                ]
        return result

    # ---- interests ----

    def interest_categories(self, list_id: str) -> list[dict[str, Any]]:
        def fetch(offset: int, count: int) -> Any:
            return self._client.lists.get_list_interest_categories(list_id, count=count, offset=offset)

        return [
            item for page in self._pages("GET interest categories", fetch, "categories", PAGE_SIZE_MAX) for item in page
        ]

    def interests(self, list_id: str, category_id: str) -> list[dict[str, Any]]:
        def fetch(offset: int, count: int) -> Any:
            return self._client.lists.list_interest_category_interests(list_id, category_id, count=count, offset=offset)

        return [item for page in self._pages("GET interests", fetch, "interests", PAGE_SIZE_MAX) for item in page]

    # ---- merge fields ----

    def merge_fields(self, list_id: str) -> list[dict[str, Any]]:
        """The audience's merge fields (tag, type, required, options such as date_format and size)."""

        def fetch(offset: int, count: int) -> Any:
            return self._client.lists.get_list_merge_fields(list_id, count=count, offset=offset)

        return [item for page in self._pages("GET merge fields", fetch, "merge_fields", PAGE_SIZE_MAX) for item in page]

    def create_merge_field(self, list_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Adds a merge field ({"tag", "name", "type", "required"?, "options"?}) to the audience."""
        unknown = set(body) - {"tag", "name", "type", "required", "default_value", "public", "options", "help_text"}
        if unknown:
            raise ValueError(f"merge field has unknown keys {sorted(unknown)}")
        payload = dict(body)
        return self._call("POST merge field", lambda: self._client.lists.add_list_merge_field(list_id, payload))

    # ---- campaigns and reports ----

    def iter_campaigns(self, list_id: str, since_send_time: datetime | None) -> Iterator[dict[str, Any]]:
        """Sent campaigns of the audience, oldest send first."""
        since = mailchimp_time(since_send_time) if since_send_time is not None else None

        def fetch(offset: int, count: int) -> Any:
            return self._client.campaigns.list(
                **_params(
                    list_id=list_id,
                    status="sent",
                    since_send_time=since,
                    sort_field="send_time",
                    sort_dir="ASC",
                    count=count,
                    offset=offset,
                )
            )

        for page in self._pages("GET campaigns", fetch, "campaigns", PAGE_SIZE_MAX):
            yield from page

    def campaign_report(self, campaign_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        """GET /reports/{id}: the campaign's totals as Mailchimp counts them."""
        answer = self._call(
            "GET campaign report",
            lambda: self._client.reports.get_campaign_report(campaign_id, **_params(fields=fields)),
        )
        return answer or {}

    def iter_email_activity(self, campaign_id: str, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Per-member opens, clicks and bounces of one campaign."""
        after = mailchimp_time(since) if since is not None else None

        def fetch(offset: int, count: int) -> Any:
            return self._client.reports.get_email_activity_for_campaign(
                campaign_id, **_params(count=count, offset=offset, since=after)
            )

        for page in self._pages("GET email activity", fetch, "emails", PAGE_SIZE_MAX):
            yield from page

    def iter_sent_to(self, campaign_id: str) -> Iterator[dict[str, Any]]:
        def fetch(offset: int, count: int) -> Any:
            return self._client.reports.get_campaign_recipients(campaign_id, count=count, offset=offset)

        for page in self._pages("GET sent-to", fetch, "sent_to", PAGE_SIZE_MAX):
            yield from page

    def iter_unsubscribed(self, campaign_id: str) -> Iterator[dict[str, Any]]:
        def fetch(offset: int, count: int) -> Any:
            return self._client.reports.get_unsubscribed_list_for_campaign(campaign_id, count=count, offset=offset)

        for page in self._pages("GET unsubscribed", fetch, "unsubscribes", PAGE_SIZE_MAX):
            yield from page

    # ---- webhooks ----

    def create_webhook(
        self, list_id: str, url: str, events: Mapping[str, bool], sources: Mapping[str, bool]
    ) -> dict[str, Any]:
        """Registers an audience webhook; send all three sources (``api: False`` stops our own echoes)."""
        for name, value, known in (("events", events, WEBHOOK_EVENTS), ("sources", sources, WEBHOOK_SOURCES)):
            unknown = set(value) - known
            if unknown:
                raise ValueError(f"webhook {name} has unknown names {sorted(unknown)}; allowed: {sorted(known)}")
            if not all(isinstance(flag, bool) for flag in value.values()):
                raise ValueError(f"webhook {name} values must be true or false")
        body = {"url": url, "events": dict(events), "sources": dict(sources)}
        return self._call("POST webhook", lambda: self._client.lists.create_list_webhook(list_id, body))

    def webhooks(self, list_id: str) -> list[dict[str, Any]]:
        """The audience's webhooks (``signing_secret`` is never in these answers: only the create returns it)."""
        answer = self._call("GET webhooks", lambda: self._client.lists.get_list_webhooks(list_id)) or {}
        return list(answer.get("webhooks") or [])

    def delete_webhook(self, list_id: str, webhook_id: str) -> bool:
        """Deletes one webhook; False when it was already gone."""

        def send() -> Any:
            result = self._client.lists.delete_list_webhook(list_id, webhook_id)
            if isinstance(result, requests.Response) and result.ok and not result.content:
                return {"deleted": True}  # the 204: told apart from the 404 that missing_ok turns into None
            return result

        return self._call("DELETE webhook", send, missing_ok=True) is not None

    # ---- batch operations ----

    def run_batch_operations(
        self, operations: list[Mapping[str, Any]], poll_seconds: float = 5.0, max_wait_seconds: float = 3600.0
    ) -> list[dict[str, Any]]:
        """POST /batches, wait until finished, and return each operation's result with its parsed response.

        Each result is ``{"operation_id", "status_code", "response"}``; results are unordered, as Mailchimp
        runs operations in any order.
        """
        if not operations:
            return []
        body = {"operations": [_batch_operation(operation) for operation in operations]}
        batch = self._call("POST batch", lambda: self._client.batches.start(body)) or {}
        batch_id = str(batch.get("id") or "")
        if not batch_id:
            raise MailchimpError(
                None, "Batch Not Started", "the answer to POST /batches had no batch id", operation="POST batch"
            )
        deadline = time.monotonic() + max_wait_seconds
        while batch.get("status") != "finished":
            if time.monotonic() >= deadline:
                raise MailchimpError(
                    None,
                    "Batch Timeout",
                    f"batch {batch_id} not finished after "
                    f"{max_wait_seconds:.0f} s; its results stay downloadable for 7 days",
                    operation="GET batch",
                )
            time.sleep(poll_seconds)
            batch = self._call("GET batch", lambda: self._client.batches.status(batch_id)) or {}
        return self._batch_results(batch_id, batch)

    def _batch_results(self, batch_id: str, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Downloads the gzipped tar of results; a failed download asks for a fresh URL and tries again."""
        if not batch.get("total_operations") and not batch.get("response_body_url"):
            return []
        for attempt in range(1, self.max_attempts + 1):
            url = batch.get("response_body_url")
            try:
                response = requests.get(url, timeout=self.timeout) if url else None
            except requests.RequestException as exc:
                response, failure = None, f"{type(exc).__name__}"
            else:
                failure = "no response_body_url" if response is None else f"HTTP {response.status_code}"
            if response is not None and response.ok:
                return _parse_batch_archive(response.content)
            if attempt == self.max_attempts:
                raise MailchimpError(
                    None,
                    "Batch Results Unavailable",
                    f"results of batch {batch_id} could not be downloaded ({failure})",
                    operation="GET batch results",
                    retryable=True,
                    attempts=attempt,
                )
            time.sleep(min(BACKOFF_CAP_SECONDS, self.backoff_seconds * 2 ** (attempt - 1)) * random.uniform(0.5, 1))
            # the download URL expires after ten minutes; the batch status gives a fresh one
            batch = self._call("GET batch", lambda: self._client.batches.status(batch_id)) or {}
        raise AssertionError("unreachable")  # pragma: no cover


# ---- helpers that shape requests and answers ------------------------------------------------


def _api_root(api_key: str, base_url: str | None) -> str:
    """The API root the client's host is set to, from MAILCHIMP_BASE_URL or the key's data center."""
    if base_url is None or not base_url.strip():
        _, dash, data_center = api_key.rpartition("-")
        if not dash or not _DATA_CENTER.match(data_center):
            raise ConfigurationError(
                "MAILCHIMP_API_KEY",
                "must end in -<dc> (for example ...-us21) so the API root can be derived",
                "copy the whole key from Mailchimp, or set MAILCHIMP_BASE_URL",
            )
        return f"https://{data_center}.api.mailchimp.com/3.0"
    root = base_url.strip().rstrip("/")
    if "server" in root.lower():
        raise ConfigurationError(
            "MAILCHIMP_BASE_URL",
            "must not contain the word 'server': the Mailchimp client rewrites it anywhere in the URL",
            "use another host name or the IP address",
        )
    parts = urlsplit(root)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(
            "MAILCHIMP_BASE_URL", "must be an https URL", "set it like https://us21.api.mailchimp.com/3.0"
        )
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigurationError(
            "MAILCHIMP_BASE_URL",
            "must use https (plain http is allowed for 127.0.0.1 only, where an emulator listens)",
            "use https: the API key travels in every request",
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigurationError(
            "MAILCHIMP_BASE_URL",
            "must be a plain API root, without credentials, query or fragment",
            "remove them (the API key is MAILCHIMP_API_KEY)",
        )
    if not parts.path.endswith("/3.0"):
        raise ConfigurationError(
            "MAILCHIMP_BASE_URL",
            "must be the API root ending in /3.0",
            "set it like https://us21.api.mailchimp.com/3.0 or http://127.0.0.1:4010/3.0",
        )
    return root


def _server_time(response: requests.Response) -> datetime | None:
    try:
        return parsedate_to_datetime(response.headers["Date"])
    except (KeyError, TypeError, ValueError):
        return None


def _attempt(send: Callable[[], Any]) -> Any:
    """The decoded answer of one call, or a _Failure, whatever shape the client returned it in."""
    try:
        result = send()
    except ApiClientError as err:
        if err.status_code is None and not isinstance(err.text, requests.RequestException):
            raise  # a bug while building the request, not a network failure: never retried
        return _Failure(err.status_code, err.text)
    if isinstance(result, requests.Response):
        # the client hands back the raw response when the body is empty or not labelled JSON
        if not result.ok:
            return _Failure(result.status_code, result.text)
        if not result.content:
            return None
        try:
            return result.json()
        except ValueError:
            return _Failure(result.status_code, result.text)
    if isinstance(result, str):
        # a 2xx body not labelled application/json: JSON is decoded, anything else (a proxy's HTML page)
        # is treated like the CDN's HTML 502
        try:
            return json.loads(result)
        except ValueError:
            return _Failure(502, result)
    return result


def _member_body(values: Mapping[str, Any], allowed: frozenset[str], statuses: frozenset[str]) -> dict[str, Any]:
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"member fields {sorted(unknown)} are not accepted here; allowed: {sorted(allowed)}")
    body = {name: value for name, value in values.items() if value is not None}
    for name in ("status", "status_if_new"):
        if name in body and body[name] not in statuses:
            raise ValueError(f"{name} must be one of {sorted(statuses)}")
    for name in _TIMESTAMP_FIELDS:
        if isinstance(body.get(name), datetime):
            body[name] = mailchimp_time(body[name])
    for name in ("interests", "merge_fields", "location"):
        if name in body:
            body[name] = dict(body[name])
    if "interests" in body and not all(isinstance(on, bool) for on in body["interests"].values()):
        raise ValueError("interests map interest ids to true or false")
    if "email_address" in body:
        if not isinstance(body["email_address"], str) or "@" not in body["email_address"]:
            raise ValueError("email_address must be an email address")
        body["email_address"] = body["email_address"].strip()
    return body


def _batch_member(member: Mapping[str, Any]) -> dict[str, Any]:
    body = _member_body(member, _BATCH_MEMBER_FIELDS, WRITABLE_STATUSES)
    if "email_address" not in body:
        raise ValueError("every batch subscribe member needs an email_address")
    if "status" not in body and "status_if_new" not in body:
        raise ValueError(f"member {addresses.member_hash(body['email_address'])} needs status or status_if_new")
    if "tags" in body:
        body["tags"] = [str(tag) for tag in body["tags"]]
    return body


def _member_error(item: Mapping[str, Any]) -> MemberError:
    email = item.get("email_address")
    return MemberError(
        member_hash=addresses.member_hash(email) if isinstance(email, str) and email.strip() else None,
        error=addresses.redact_emails(str(item.get("error") or "")),
        error_code=item.get("error_code"),
        field=item.get("field") or None,
        field_message=addresses.redact_emails(str(item["field_message"])) if item.get("field_message") else None,
    )


def _batch_operation(operation: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(operation) - _BATCH_OPERATION_FIELDS
    if unknown:
        raise ValueError(
            f"batch operation fields {sorted(unknown)} are not accepted; allowed: {sorted(_BATCH_OPERATION_FIELDS)}"
        )
    method = str(operation.get("method", "")).upper()
    if method not in _BATCH_METHODS:
        raise ValueError(f"batch operation method must be one of {sorted(_BATCH_METHODS)}")
    path = str(operation.get("path", ""))
    if not path.startswith("/") or "@" in path:
        raise ValueError(
            "batch operation path must start with / (relative to /3.0) and address members "
            "by subscriber hash, never by email address"
        )
    shaped: dict[str, Any] = {"method": method, "path": path}
    if operation.get("params") is not None:
        shaped["params"] = {
            name: mailchimp_time(value) if isinstance(value, datetime) else value
            for name, value in dict(operation["params"]).items()
        }
    if operation.get("body") is not None:
        body = operation["body"]
        shaped["body"] = body if isinstance(body, str) else json.dumps(body)  # the API wants a JSON string
    if operation.get("operation_id") is not None:
        shaped["operation_id"] = str(operation["operation_id"])
    return shaped


def _parse_batch_archive(content: bytes) -> list[dict[str, Any]]:
    """Every result in the gzipped tar, with ``response`` (a JSON string) parsed."""
    results: list[dict[str, Any]] = []
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as archive:
        for entry in archive:
            if not entry.isfile():
                continue
            handle = archive.extractfile(entry)
            raw = handle.read() if handle else b""
            if not raw.strip():
                continue
            for item in json.loads(raw):
                response = item.get("response")
                if isinstance(response, str):
                    response = json.loads(response) if response.strip() else None
                results.append(
                    {
                        "operation_id": item.get("operation_id"),
                        "status_code": item.get("status_code"),
                        "response": response,
                    }
                )
    return results
