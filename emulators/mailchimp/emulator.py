"""The HTTP face of the Mailchimp emulator: routes under /3.0, authentication, limits, faults and admin."""

from __future__ import annotations

import base64
import binascii
import bisect
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from email.message import Message
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from emulators.common import BadJsonError, Emulator, FaultSpec, Request, Response, Route

from . import batches as batch_ops
from . import fields as shapes
from . import merge_fields
from .admin import MailchimpAdmin
from .audience import (
    CATEGORY_TYPES,
    MAX_MEMBER_TAGS_SHOWN,
    MEMBER_STATUSES,
    Audience,
    Interest,
    InterestCategory,
    Member,
    Webhook,
    short_id,
    subscriber_hash,
)
from .fields import Projection
from .latency import LatencyModel
from .latency import serve as serve_latency
from .members import MemberRules
from .problems import (
    FAULT_TEXT,
    HTML_502,
    TOO_MANY_CONNECTIONS,
    ApiError,
    bad_request,
    field_error,
    invalid_resource,
    missing_fields,
    new_request_id,
    not_found,
    problem_response,
)
from .reports import (
    CAMPAIGN_STATUSES,
    CampaignBook,
    render_campaign,
    render_email_activity,
    render_report,
    render_sent_to,
    render_unsubscribe,
)
from .timestamps import format_epoch, parse_filter, to_epoch
from .webhooks import MailchimpDeliveries, WebhookEvents, new_signing_secret, validate_url

API_KEY = re.compile(r"^[0-9a-f]{32}-[a-z]{2,4}\d{1,3}$")
OAUTH_TOKEN = re.compile(r"^[0-9a-f]{32}$")
MAX_COUNT = 1000
DEFAULT_COUNT = 10
SORT_FIELDS = ("timestamp_opt", "timestamp_signup", "last_changed")
WEBHOOK_EVENTS = ("subscribe", "unsubscribe", "profile", "cleaned", "upemail", "campaign")
WEBHOOK_SOURCES = ("user", "admin", "api")
DUPLICATE_WEBHOOK = "Sorry, you can't set up multiple WebHooks for one URL on the same list."
JSON_TYPE = "application/json; charset=utf-8"


def _flag(value: str | None) -> bool:
    """Boolean query values: 'true' and '1' (any case) are true, everything else false."""
    return (value or "").strip().lower() in ("true", "1")


class MailchimpEmulator(MailchimpAdmin, Emulator):
    """Mailchimp Marketing API v3.0 on loopback; see the package docstring for the rules and admin routes."""

    name = "mailchimp"

    def __init__(self, compliance: str = "documented") -> None:
        """``compliance="strict"`` refuses re-subscribing every unsubscribed member through the API (also one an
        admin or the API unsubscribed); the default holds only the person's own unsubscribe and bounces, as the
        service does. ``POST /_admin/settings {"compliance"}`` switches it; a reset returns to this value."""
        if compliance not in ("documented", "strict"):
            raise ValueError("compliance must be documented or strict")
        self.default_compliance = compliance
        super().__init__()
        self._in_flight: Counter[str] = Counter()
        self._in_flight_lock = threading.Lock()
        self.webhook_deliveries = MailchimpDeliveries()
        self.webhook_events = WebhookEvents(self.webhook_deliveries, self._now)
        self.reset()
        self._register_api()
        self._register_admin()
        self.webhook_deliveries.outbox.register(self.admin, "/_admin/webhooks")

    # ---- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        self.audiences: dict[str, Audience] = {}
        self.confirmations: list[dict[str, Any]] = []
        self.fake_domains: set[str] = set()
        self.rules = MemberRules(
            self._now, self.fake_domains, self.confirmations, strict_compliance=self.default_compliance == "strict"
        )
        self.campaigns = CampaignBook()
        self.batches: dict[str, batch_ops.Batch] = {}
        self.latency_seconds = 0.0
        self.latency = LatencyModel()
        self.concurrency_limit = 10
        self.last_members_scanned = 0
        self.next_audience_web_id = 200_001
        self.next_category = 1
        self.rules.observer = self.webhook_events
        self.sign_webhooks = True
        self.webhook_deliveries.hooks.clear()
        self.webhook_deliveries.outbox.clear()

    def close(self) -> None:
        self.webhook_deliveries.outbox.close()

    def _now(self) -> int:
        return to_epoch(self.clock.now())

    # ---- routes ----------------------------------------------------------------------------------
    def _register_api(self) -> None:
        add = self.router.add
        add("GET", "/3.0/", self._root)
        add("GET", "/3.0/ping", self._ping)
        add("GET", "/3.0/lists", self._lists)
        add("GET", "/3.0/lists/{list_id}", self._list)
        add("POST", "/3.0/lists/{list_id}", self._batch_subscribe)
        add("GET", "/3.0/lists/{list_id}/members", self._list_members)
        add("POST", "/3.0/lists/{list_id}/members", self._create_member)
        add("GET", "/3.0/lists/{list_id}/members/{subscriber_hash}", self._get_member)
        add("PUT", "/3.0/lists/{list_id}/members/{subscriber_hash}", self._put_member)
        add("PATCH", "/3.0/lists/{list_id}/members/{subscriber_hash}", self._patch_member)
        add("DELETE", "/3.0/lists/{list_id}/members/{subscriber_hash}", self._archive_member)
        add("POST", "/3.0/lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent", self._forget_member)
        add("GET", "/3.0/lists/{list_id}/members/{subscriber_hash}/tags", self._member_tags)
        add("POST", "/3.0/lists/{list_id}/members/{subscriber_hash}/tags", self._update_member_tags)
        add("GET", "/3.0/lists/{list_id}/interest-categories", self._categories)
        add("POST", "/3.0/lists/{list_id}/interest-categories", self._create_category)
        category = "/3.0/lists/{list_id}/interest-categories/{interest_category_id}"
        add("GET", category, self._category)
        add("PATCH", category, self._update_category)
        add("DELETE", category, self._delete_category)
        add("GET", category + "/interests", self._interests)
        add("POST", category + "/interests", self._create_interest)
        add("GET", category + "/interests/{interest_id}", self._interest)
        add("PATCH", category + "/interests/{interest_id}", self._update_interest)
        add("DELETE", category + "/interests/{interest_id}", self._delete_interest)
        add("GET", "/3.0/lists/{list_id}/segments", self._segments)
        add("GET", "/3.0/lists/{list_id}/segments/{segment_id}", self._segment)
        add("POST", "/3.0/lists/{list_id}/segments/{segment_id}", self._batch_segment_members)
        add("GET", "/3.0/lists/{list_id}/segments/{segment_id}/members", self._segment_members)
        add("GET", "/3.0/lists/{list_id}/tag-search", self._tag_search)
        add("GET", "/3.0/lists/{list_id}/webhooks", self._webhooks)
        add("POST", "/3.0/lists/{list_id}/webhooks", self._create_webhook)
        add("GET", "/3.0/lists/{list_id}/webhooks/{webhook_id}", self._webhook)
        add("PATCH", "/3.0/lists/{list_id}/webhooks/{webhook_id}", self._update_webhook)
        add("DELETE", "/3.0/lists/{list_id}/webhooks/{webhook_id}", self._delete_webhook)
        add("GET", "/3.0/campaigns", self._list_campaigns)
        add("GET", "/3.0/campaigns/{campaign_id}", self._campaign)
        add("GET", "/3.0/reports", self._reports)
        add("GET", "/3.0/reports/{campaign_id}", self._report)
        add("GET", "/3.0/reports/{campaign_id}/sent-to", self._sent_to)
        add("GET", "/3.0/reports/{campaign_id}/email-activity", self._email_activity)
        add("GET", "/3.0/reports/{campaign_id}/unsubscribed", self._unsubscribed)
        add("POST", "/3.0/batches", self._start_batch)
        add("GET", "/3.0/batches", self._list_batches)
        add("GET", "/3.0/batches/{batch_id}", self._batch_status)
        add("DELETE", "/3.0/batches/{batch_id}", self._delete_batch)
        add("GET", "/_batch-results/{archive}", self._batch_archive)
        merge_fields.register(self)

    # ---- the hooks of the base class ------------------------------------------------------------
    def authenticate(self, request: Request) -> Response | None:
        if request.path.startswith("/_batch-results/"):
            return None  # a pre-signed download link, like the real storage URL
        key = self._credential(request)
        if key is None:
            return problem_response(
                ApiError(401, "API Key Missing", "Your request did not include an API key."), new_request_id()
            )
        bearer = (request.header("Authorization") or "").strip().lower().startswith("bearer ")
        if not (API_KEY.match(key) or (bearer and OAUTH_TOKEN.match(key))):
            return problem_response(ApiError(401, "API Key Invalid", FAULT_TEXT[401][1]), new_request_id())
        return None

    def dispatch(self, route: Route, request: Request) -> Response:
        """Runs the handler while counting it against the caller's 10 simultaneous connections."""
        request_id = new_request_id()
        if request.path.startswith("/_batch-results/"):
            return self._run(route, request, request_id)
        key = self._credential(request) or ""
        with self._in_flight_lock:
            if self._in_flight[key] >= self.concurrency_limit:
                self.latency.note_throttled()
                return problem_response(ApiError(429, "TooManyRequests", TOO_MANY_CONNECTIONS), request_id)
            self._in_flight[key] += 1
        try:
            if self.latency_seconds:
                time.sleep(self.latency_seconds)
            if self.latency.enabled:
                return serve_latency(self.latency, route.template, request, lambda r: self._run(route, r, request_id))
            return self._run(route, request, request_id)
        finally:
            with self._in_flight_lock:
                self._in_flight[key] -= 1

    def error(self, status: int, message: str, request: Request) -> Response:
        if status == 405:
            _, _, allowed = self.router.match(request.method, request.path)
            return problem_response(
                ApiError(
                    405,
                    "Method Not Allowed",
                    "The requested method and resource are not compatible. See the Allow "
                    "header for this resource's available methods.",
                    headers={"Allow": ", ".join(allowed)},
                ),
                new_request_id(),
            )
        title, detail = FAULT_TEXT.get(status, (HTTPStatus(status).phrase, message))
        return problem_response(ApiError(status, title, detail), new_request_id())

    def fault_response(self, fault: FaultSpec, request: Request) -> Response:
        request_id = new_request_id()
        if fault.variant == "empty":
            return Response(fault.status, b"", {"X-Request-Id": request_id})
        if fault.variant == "html":
            return Response(fault.status, HTML_502, {"Content-Type": "text/html"})
        phrase = HTTPStatus(fault.status)
        title, detail = FAULT_TEXT.get(fault.status, (phrase.phrase, phrase.description))
        return problem_response(ApiError(fault.status, title, detail), request_id)

    @staticmethod
    def _credential(request: Request) -> str | None:
        header = (request.header("Authorization") or "").strip()
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return ""
            return decoded.partition(":")[2]
        if scheme.lower() == "bearer":
            return value.strip()
        return None

    def _run(self, route: Route, request: Request, request_id: str) -> Response:
        try:
            response = route.handler(request)
        except ApiError as problem:
            return problem_response(problem, request_id)
        except BadJsonError:
            return problem_response(
                ApiError(400, "JSON Parse Exception", "We encountered an unspecified JSON parsing error."), request_id
            )
        response.headers.setdefault("X-Request-Id", request_id)
        return response

    # ---- request helpers ---------------------------------------------------------------------------
    @staticmethod
    def _base(request: Request) -> str:
        return f"http://{request.header('Host') or '127.0.0.1'}"

    @staticmethod
    def _ok(body: Any) -> Response:
        return Response.json(200, body, JSON_TYPE)

    @staticmethod
    def _no_content() -> Response:
        return Response.empty(204)

    @staticmethod
    def _body(request: Request) -> Any:
        return request.json() if request.body.strip() else {}

    def _audience(self, request: Request) -> Audience:
        audience = self.audiences.get(unquote(request.params["list_id"]))
        if audience is None:
            raise not_found()
        return audience

    @staticmethod
    def _member_key(audience: Audience, raw: str) -> str:
        """The path accepts the subscriber hash, the email address or the contact_id."""
        value = unquote(raw)
        if value in audience.members:
            return value
        if value in audience.by_contact:
            return audience.by_contact[value]
        if "@" in value:
            return subscriber_hash(value)
        return value

    def _member(self, audience: Audience, request: Request) -> Member:
        member = audience.members.get(self._member_key(audience, request.params["subscriber_hash"]))
        if member is None:
            raise not_found()
        return member

    @staticmethod
    def _paging(request: Request) -> tuple[int, int]:
        raw_count, raw_offset = request.arg("count"), request.arg("offset")
        try:
            count = DEFAULT_COUNT if raw_count in (None, "") else int(raw_count)
            offset = 0 if raw_offset in (None, "") else int(raw_offset)
        except ValueError as exc:
            raise bad_request("count and offset must be whole numbers.") from exc
        if count > MAX_COUNT:
            raise bad_request(f"count must be {MAX_COUNT} or less; page through larger collections with offset.")
        if count < 0 or offset < 0:
            raise bad_request("count and offset cannot be negative.")
        return count, offset

    @staticmethod
    def _projection(request: Request, shape: shapes.Shape) -> Projection:
        return Projection(request.arg("fields"), request.arg("exclude_fields"), shape)

    def _links(self, request: Request, path: str, *rels: str) -> list[dict[str, str]]:
        """HATEOAS links: ``parent`` points one level up, the others at ``path`` itself."""
        base = f"{self._base(request)}/3.0"
        methods = {
            "self": "GET",
            "parent": "GET",
            "update": "PATCH",
            "upsert": "PUT",
            "delete": "DELETE",
            "create": "POST",
        }
        parent = path.rsplit("/", 1)[0] or "/"
        return [
            {
                "rel": rel,
                "href": base + (parent if rel == "parent" else path),
                "method": methods.get(rel, "GET"),
                "targetSchema": "",
                "schema": "",
            }
            for rel in rels
        ]

    def _page(
        self,
        request: Request,
        items: list[Any],
        shape: shapes.Shape,
        key: str,
        path: str,
        extra: dict[str, Any] | None = None,
    ) -> Response:
        """A plain collection: count/offset paging, total_items and partial responses."""
        projection = self._projection(request, shape)
        count, offset = self._paging(request)
        body = {
            key: items[offset : offset + count],
            **(extra or {}),
            "total_items": len(items),
            "_links": self._links(request, path, "self", "parent"),
        }
        return self._ok(projection.apply(body))

    # ---- account --------------------------------------------------------------------------------------
    def _root(self, request: Request) -> Response:
        return self._ok(
            {
                "account_id": short_id("account"),
                "login_id": "1",
                "account_name": "Consent Bridge Emulator",
                "email": "owner@consent-bridge.example.org",
                "role": "owner",
                "pricing_plan_type": "monthly",
                "total_subscribers": sum(a.count("subscribed") for a in self.audiences.values()),
                "_links": self._links(request, "/", "self"),
            }
        )

    def _ping(self, request: Request) -> Response:
        return self._ok({"health_status": "Everything's Chimpy!"})

    # ---- audiences ------------------------------------------------------------------------------------
    def _render_audience(self, request: Request, audience: Audience) -> dict[str, Any]:
        stats = audience.stats()
        sent = [c for c in self.campaigns.campaigns.values() if c.list_id == audience.id and c.status == "sent"]
        stats["campaign_count"] = len(sent)
        stats["campaign_last_sent"] = format_epoch(max((c.send_time or 0 for c in sent), default=None) or None)
        return {
            "id": audience.id,
            "web_id": audience.web_id,
            "name": audience.name,
            "contact": {
                "company": audience.name,
                "address1": "1 Example Street",
                "address2": "",
                "city": "Atlanta",
                "state": "GA",
                "zip": "30308",
                "country": "US",
                "phone": "",
            },
            "permission_reminder": "You are receiving this email because you opted in.",
            "use_archive_bar": True,
            "campaign_defaults": {
                "from_name": audience.name,
                "from_email": "news@consent-bridge.example.org",
                "subject": "",
                "language": "en",
            },
            "notify_on_subscribe": "",
            "notify_on_unsubscribe": "",
            "date_created": format_epoch(audience.date_created),
            "list_rating": 0,
            "email_type_option": False,
            "subscribe_url_short": f"https://eepurl.com/{audience.id}",
            "subscribe_url_long": f"https://emulator.list-manage.com/subscribe?id={audience.id}",
            "beamer_address": f"{audience.id}@inbound.mailchimp.com",
            "visibility": "pub",
            "double_optin": audience.double_optin,
            "has_welcome": False,
            "marketing_permissions": bool(audience.permissions),
            "modules": [],
            "stats": stats,
            "_links": self._links(request, f"/lists/{audience.id}", "self", "parent", "update", "delete"),
        }

    def _lists(self, request: Request) -> Response:
        projection = self._projection(request, shapes.AUDIENCE_LIST)
        count, offset = self._paging(request)
        with self.lock:
            audiences = list(self.audiences.values())
            items = [self._render_audience(request, a) for a in audiences[offset : offset + count]]
        body = {
            "lists": items,
            "total_items": len(audiences),
            "constraints": {"may_create": True, "max_instances": 100, "current_total_instances": len(audiences)},
            "_links": self._links(request, "/lists", "self", "create"),
        }
        return self._ok(projection.apply(body))

    def _list(self, request: Request) -> Response:
        projection = self._projection(request, shapes.AUDIENCE)
        with self.lock:
            body = self._render_audience(request, self._audience(request))
        return self._ok(projection.apply(body))

    # ---- members: reading --------------------------------------------------------------------------------
    def render_member(
        self, request: Request, audience: Audience, member: Member, interest_ids: list[str] | None = None
    ) -> dict[str, Any]:
        ids = audience.interest_ids() if interest_ids is None else interest_ids
        merge = {f.tag: member.merge_fields.get(f.tag, "") for f in audience.merge_fields}
        first, last = str(merge.get("FNAME") or ""), str(merge.get("LNAME") or "")
        path = f"/lists/{audience.id}/members/{member.hash}"
        body: dict[str, Any] = {
            "id": member.hash,
            "email_address": member.email_address,
            "unique_email_id": member.unique_email_id,
            "contact_id": member.contact_id,
            "full_name": f"{first} {last}".strip(),
            "web_id": member.web_id,
            "email_type": member.email_type,
            "status": member.status,
        }
        if member.status == "unsubscribed":
            body["unsubscribe_reason"] = member.unsubscribe_reason
        body.update(
            {
                "consents_to_one_to_one_messaging": True,
                "sms_phone_number": member.sms_phone_number,
                "sms_subscription_status": member.sms_subscription_status,
                "sms_subscription_last_updated": member.sms_subscription_last_updated,
                "merge_fields": merge,
            }
        )
        if ids:
            body["interests"] = {interest_id: interest_id in member.interests for interest_id in ids}
        body.update(
            {
                "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
                "ip_signup": member.ip_signup,
                "timestamp_signup": format_epoch(member.timestamp_signup),
                "ip_opt": member.ip_opt,
                "timestamp_opt": format_epoch(member.timestamp_opt),
                "member_rating": member.member_rating,
                "last_changed": format_epoch(member.last_changed),
                "language": member.language,
                "vip": member.vip,
                "email_client": "",
                "location": {
                    **member.location,
                    "gmtoff": 0,
                    "dstoff": 0,
                    "country_code": "",
                    "timezone": "",
                    "region": "",
                },
                "marketing_permissions": [
                    {
                        "marketing_permission_id": permission.id,
                        "text": permission.text,
                        "enabled": member.marketing_permissions.get(permission.id, False),
                    }
                    for permission in audience.permissions
                ],
                "source": member.source,
                "tags_count": len(member.tags),
                "tags": [
                    {"id": tag_id, "name": audience.tags[tag_id].name}
                    for tag_id in list(member.tags)[:MAX_MEMBER_TAGS_SHOWN]
                ],
                "list_id": audience.id,
                "_links": self._links(request, path, "self", "parent", "update", "upsert", "delete"),
            }
        )
        return body

    def _list_members(self, request: Request) -> Response:
        projection = self._projection(request, shapes.MEMBER_LIST)
        count, offset = self._paging(request)
        status = request.arg("status") or None
        if status is not None and status not in MEMBER_STATUSES:
            raise bad_request(f"status must be one of: {', '.join(MEMBER_STATUSES)}.")
        sort_field = request.arg("sort_field") or None
        if sort_field is not None and sort_field not in SORT_FIELDS:
            raise bad_request(f"sort_field must be one of: {', '.join(SORT_FIELDS)}.")
        sort_dir = request.arg("sort_dir") or "ASC"
        if sort_dir not in ("ASC", "DESC"):
            raise bad_request("sort_dir must be ASC or DESC.")
        unsubscribed_since = parse_filter(request.arg("unsubscribed_since"))
        if request.arg("unsubscribed_since") and status != "unsubscribed":
            raise bad_request("unsubscribed_since can only be used with status=unsubscribed.")
        interest_params = [request.arg(p) for p in ("interest_category_id", "interest_ids", "interest_match")]
        if any(interest_params) and not all(interest_params):
            raise bad_request("interest_category_id, interest_ids and interest_match must be supplied together.")
        if interest_params[2] and interest_params[2] not in ("any", "all", "none"):
            raise bad_request("interest_match must be one of: any, all, none.")
        since = parse_filter(request.arg("since_last_changed"))
        before = parse_filter(request.arg("before_last_changed"))
        other_filters = {
            "since_timestamp_opt": parse_filter(request.arg("since_timestamp_opt")),
            "before_timestamp_opt": parse_filter(request.arg("before_timestamp_opt")),
        }
        email_type = request.arg("email_type") or None
        unique_email_id = request.arg("unique_email_id") or None
        vip_only = _flag(request.arg("vip_only"))
        simple = (
            not any(v is not None for v in other_filters.values())
            and email_type is None
            and unique_email_id is None
            and not vip_only
            and not any(interest_params)
            and unsubscribed_since is None
        )

        with self.lock:
            audience = self._audience(request)
            if simple and sort_field == "last_changed":
                page, total = self._page_by_last_changed(
                    audience, status, since, before, count, offset, descending=sort_dir == "DESC"
                )
            else:

                def keep(m: Member) -> bool:
                    if (m.status != status) if status else m.status == "archived":
                        return False
                    if since is not None and not m.last_changed > since:
                        return False
                    if before is not None and not m.last_changed < before:
                        return False
                    opt = m.timestamp_opt
                    since_opt, before_opt = other_filters["since_timestamp_opt"], other_filters["before_timestamp_opt"]
                    if since_opt is not None and (opt is None or not opt > since_opt):
                        return False
                    if before_opt is not None and (opt is None or not opt < before_opt):
                        return False
                    if email_type and m.email_type != email_type:
                        return False
                    if unique_email_id and m.unique_email_id != unique_email_id:
                        return False
                    if vip_only and not m.vip:
                        return False
                    if unsubscribed_since is not None and not (m.unsubscribed_at or 0) > unsubscribed_since:
                        return False
                    return not any(interest_params) or _interest_match(m, interest_params)

                matches = [m for m in audience.members.values() if keep(m)]
                self.last_members_scanned = len(audience.members)
                if sort_field:
                    matches.sort(
                        key=lambda m: (getattr(m, sort_field) or 0, m.change_seq, m.hash), reverse=sort_dir == "DESC"
                    )
                total = len(matches)
                page = matches[offset : offset + count]
            members = []
            if projection.wants("members"):
                interest_ids = audience.interest_ids()
                members = [self.render_member(request, audience, m, interest_ids) for m in page]
            body = {
                "members": members,
                "list_id": audience.id,
                "total_items": total,
                "_links": self._links(request, f"/lists/{audience.id}/members", "self", "parent", "create"),
            }
        return self._ok(projection.apply(body))

    def _page_by_last_changed(
        self,
        audience: Audience,
        status: str | None,
        since: float | None,
        before: float | None,
        count: int,
        offset: int,
        descending: bool,
    ) -> tuple[list[Member], int]:
        """A bisect into the last_changed index: the cost follows the page, not the audience."""
        keys = audience.index_by_status[status] if status else audience.index_active
        low = bisect.bisect_left(keys, (math.floor(since) + 1,)) if since is not None else 0
        high = bisect.bisect_left(keys, (math.ceil(before),)) if before is not None else len(keys)
        total = max(0, high - low)
        if descending:
            end = high - offset
            chosen = keys[max(low, end - count) : end][::-1] if end > low else []
        else:
            start = low + offset
            chosen = keys[start : min(high, start + count)]
        self.last_members_scanned = len(chosen)
        return [audience.members[key[2]] for key in chosen], total

    def _get_member(self, request: Request) -> Response:
        projection = self._projection(request, shapes.MEMBER)
        with self.lock:
            audience = self._audience(request)
            body = self.render_member(request, audience, self._member(audience, request))
        return self._ok(projection.apply(body))

    # ---- members: writing --------------------------------------------------------------------------------
    def _create_member(self, request: Request) -> Response:
        body = self._body(request)
        with self.lock:
            audience = self._audience(request)
            member = self.rules.create(audience, body, _flag(request.arg("skip_merge_validation")))
            return self._ok(self.render_member(request, audience, member))

    def _put_member(self, request: Request) -> Response:
        body = self._body(request)
        with self.lock:
            audience = self._audience(request)
            key = self._member_key(audience, request.params["subscriber_hash"])
            member = self.rules.upsert(audience, key, body, _flag(request.arg("skip_merge_validation")))
            return self._ok(self.render_member(request, audience, member))

    def _patch_member(self, request: Request) -> Response:
        body = self._body(request)
        with self.lock:
            audience = self._audience(request)
            member = self.rules.update(
                audience, self._member(audience, request), body, _flag(request.arg("skip_merge_validation"))
            )
            return self._ok(self.render_member(request, audience, member))

    def _archive_member(self, request: Request) -> Response:
        with self.lock:
            audience = self._audience(request)
            self.rules.archive(audience, self._member(audience, request))
        return self._no_content()

    def _forget_member(self, request: Request) -> Response:
        with self.lock:
            audience = self._audience(request)
            self.rules.forget(audience, self._member(audience, request))
        return self._no_content()

    def _batch_subscribe(self, request: Request) -> Response:
        body = self._body(request)
        with self.lock:
            audience = self._audience(request)
            created, updated, errors = self.rules.batch_subscribe(
                audience, body, _flag(request.arg("skip_merge_validation")), _flag(request.arg("skip_duplicate_check"))
            )
            interest_ids = audience.interest_ids()
            result = {
                "new_members": [self.render_member(request, audience, m, interest_ids) for m in created],
                "updated_members": [self.render_member(request, audience, m, interest_ids) for m in updated],
                "errors": errors,
                "total_created": len(created),
                "total_updated": len(updated),
                "error_count": len(errors),
                "_links": self._links(request, f"/lists/{audience.id}", "self", "parent"),
            }
        return self._ok(result)

    # ---- member tags and tag segments ----------------------------------------------------------------------
    def _member_tags(self, request: Request) -> Response:
        with self.lock:
            audience = self._audience(request)
            member = self._member(audience, request)
            tags = [
                {"id": tag_id, "name": audience.tags[tag_id].name, "date_added": format_epoch(added)}
                for tag_id, added in member.tags.items()
            ]
        return self._page(
            request, tags, shapes.loose("tags"), "tags", f"/lists/{audience.id}/members/{member.hash}/tags"
        )

    def _update_member_tags(self, request: Request) -> Response:
        body = self._body(request)
        if not isinstance(body, dict) or "tags" not in body:
            raise invalid_resource(errors=[{"field": "", "message": "Required fields were not provided: tags"}])
        tags = body["tags"]
        if not isinstance(tags, list):
            raise field_error("tags", "Schema describes array")
        errors = []
        for position, tag in enumerate(tags):
            if not isinstance(tag, dict) or not isinstance(tag.get("name"), str) or not tag.get("name", "").strip():
                errors.append(
                    {"field": f"tags.item:{position}.name", "message": "Required fields were not provided: name"}
                )
            elif tag.get("status") not in ("active", "inactive"):
                errors.append(
                    {"field": f"tags.item:{position}.status", "message": "Value must be one of: inactive, active"}
                )
        if errors:
            raise invalid_resource(errors=errors)
        with self.lock:
            audience = self._audience(request)
            member = self._member(audience, request)
            now = self._now()
            for tag in tags:
                found = audience.tag_named(tag["name"], now, create=tag["status"] == "active")
                if found is None:
                    continue
                if tag["status"] == "active":
                    member.tags.setdefault(found.id, now)
                else:
                    member.tags.pop(found.id, None)
                found.updated_at = now
        return self._no_content()

    def _render_segment(self, request: Request, audience: Audience, tag_id: int) -> dict[str, Any]:
        tag = audience.tags[tag_id]
        return {
            "id": tag.id,
            "name": tag.name,
            "member_count": audience.tag_member_count(tag.id),
            "type": "static",
            "created_at": format_epoch(tag.created_at),
            "updated_at": format_epoch(tag.updated_at),
            "options": {"match": "any", "conditions": []},
            "list_id": audience.id,
            "_links": self._links(request, f"/lists/{audience.id}/segments/{tag.id}", "self", "parent"),
        }

    def _segments(self, request: Request) -> Response:
        segment_type = request.arg("type")
        if segment_type not in (None, "", "saved", "static", "fuzzy"):
            raise bad_request("type must be one of: saved, static, fuzzy.")
        with self.lock:
            audience = self._audience(request)
            segments = (
                []
                if segment_type in ("saved", "fuzzy")
                else [self._render_segment(request, audience, tag_id) for tag_id in audience.tags]
            )
        return self._page(
            request,
            segments,
            shapes.loose("segments", "list_id"),
            "segments",
            f"/lists/{audience.id}/segments",
            {"list_id": audience.id},
        )

    def _segment_id(self, audience: Audience, request: Request) -> int:
        try:
            tag_id = int(unquote(request.params["segment_id"]))
        except ValueError as exc:
            raise not_found() from exc
        if tag_id not in audience.tags:
            raise not_found()
        return tag_id

    def _segment(self, request: Request) -> Response:
        with self.lock:
            audience = self._audience(request)
            body = self._render_segment(request, audience, self._segment_id(audience, request))
        return self._ok(body)

    def _batch_segment_members(self, request: Request) -> Response:
        body = self._body(request)
        if not isinstance(body, dict):
            raise field_error("", "Schema describes object")
        lists = {}
        for name in ("members_to_add", "members_to_remove"):
            value = body.get(name, [])
            if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
                raise field_error(name, "Schema describes array of strings")
            if len(value) > batch_ops.PAGE // 2:
                raise field_error(name, "Array must have at most 500 items")
            lists[name] = value
        with self.lock:
            audience = self._audience(request)
            tag_id = self._segment_id(audience, request)
            now = self._now()
            added, removed, missing = [], [], []
            for email in lists["members_to_add"]:
                member = audience.members.get(subscriber_hash(email))
                if member is None:
                    missing.append(email)
                elif tag_id not in member.tags:
                    member.tags[tag_id] = now
                    added.append(member)
            for email in lists["members_to_remove"]:
                member = audience.members.get(subscriber_hash(email))
                if member is None:
                    missing.append(email)
                elif member.tags.pop(tag_id, None) is not None:
                    removed.append(member)
            if added or removed:
                audience.tags[tag_id].updated_at = now
            errors = (
                [{"email_addresses": missing, "error": "Email addresses are not members of this audience."}]
                if missing
                else []
            )
            interest_ids = audience.interest_ids()
            result = {
                "members_added": [self.render_member(request, audience, m, interest_ids) for m in added],
                "members_removed": [self.render_member(request, audience, m, interest_ids) for m in removed],
                "errors": errors,
                "total_added": len(added),
                "total_removed": len(removed),
                "error_count": len(missing),
                "_links": self._links(request, f"/lists/{audience.id}/segments/{tag_id}", "self", "parent"),
            }
        return self._ok(result)

    def _segment_members(self, request: Request) -> Response:
        """A tag's members: subscribed and pending ones, cleaned, transactional and unsubscribed ones on request."""
        wanted = {"subscribed", "pending"}
        for status in ("cleaned", "transactional", "unsubscribed"):
            if _flag(request.arg(f"include_{status}")):
                wanted.add(status)
        projection = self._projection(request, shapes.SEGMENT_MEMBER_LIST)
        count, offset = self._paging(request)
        with self.lock:
            audience = self._audience(request)
            tag_id = self._segment_id(audience, request)
            chosen = [m for m in audience.members.values() if tag_id in m.tags and m.status in wanted]
            interest_ids = audience.interest_ids()
            body = {
                "members": [
                    self.render_member(request, audience, m, interest_ids) for m in chosen[offset : offset + count]
                ],
                "total_items": len(chosen),
                "_links": self._links(request, f"/lists/{audience.id}/segments/{tag_id}/members", "self", "parent"),
            }
        return self._ok(projection.apply(body))

    def _tag_search(self, request: Request) -> Response:
        """Tags whose name starts with ``name`` (every tag without it)."""
        prefix = (request.arg("name") or "").strip().lower()
        with self.lock:
            audience = self._audience(request)
            tags = [
                {"id": tag.id, "name": tag.name}
                for tag in sorted(audience.tags.values(), key=lambda t: t.name.lower())
                if tag.name.lower().startswith(prefix)
            ]
        return self._ok({"tags": tags, "total_items": len(tags)})

    # ---- interest categories and interests -----------------------------------------------------------------
    def _render_category(self, request: Request, category: InterestCategory) -> dict[str, Any]:
        path = f"/lists/{category.list_id}/interest-categories/{category.id}"
        return {
            "list_id": category.list_id,
            "id": category.id,
            "title": category.title,
            "display_order": category.display_order,
            "type": category.type,
            "_links": self._links(request, path, "self", "parent", "update", "delete"),
        }

    def _render_interest(self, request: Request, audience: Audience, interest: Interest) -> dict[str, Any]:
        path = f"/lists/{audience.id}/interest-categories/{interest.category_id}/interests/{interest.id}"
        chosen = sum(1 for m in audience.members.values() if interest.id in m.interests and m.status == "subscribed")
        return {
            "category_id": interest.category_id,
            "list_id": audience.id,
            "id": interest.id,
            "name": interest.name,
            "subscriber_count": str(chosen),
            "display_order": interest.display_order,
            "_links": self._links(request, path, "self", "parent", "update", "delete"),
        }

    def _category_of(self, audience: Audience, request: Request) -> InterestCategory:
        category = audience.categories.get(unquote(request.params["interest_category_id"]))
        if category is None:
            raise not_found()
        return category

    def _interest_of(self, audience: Audience, category: InterestCategory, request: Request) -> Interest:
        interest = audience.interests.get(unquote(request.params["interest_id"]))
        if interest is None or interest.category_id != category.id:
            raise not_found()
        return interest

    def _categories(self, request: Request) -> Response:
        with self.lock:
            audience = self._audience(request)
            wanted = request.arg("type")
            items = [
                self._render_category(request, c)
                for c in sorted(audience.categories.values(), key=lambda c: (c.display_order, c.id))
                if not wanted or c.type == wanted
            ]
        return self._page(
            request,
            items,
            shapes.CATEGORY_LIST,
            "categories",
            f"/lists/{audience.id}/interest-categories",
            {"list_id": audience.id},
        )

    def _category(self, request: Request) -> Response:
        projection = self._projection(request, shapes.CATEGORY)
        with self.lock:
            audience = self._audience(request)
            body = self._render_category(request, self._category_of(audience, request))
        return self._ok(projection.apply(body))

    def _validate_category(
        self, audience: Audience, body: Any, creating: bool, current: InterestCategory | None = None
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise field_error("", "Schema describes object")
        missing = [name for name in ("title", "type") if creating and name not in body]
        if missing:
            raise missing_fields(*missing)
        if "title" in body and (not isinstance(body["title"], str) or not body["title"].strip()):
            raise field_error("title", "Schema describes string")
        if "type" in body and body["type"] not in CATEGORY_TYPES:
            raise field_error("type", f"Value must be one of: {', '.join(CATEGORY_TYPES)}")
        if "display_order" in body and not isinstance(body["display_order"], int):
            raise field_error("display_order", "Schema describes integer")
        title = body.get("title")
        if title and any(
            c.title.lower() == title.strip().lower() and c is not current for c in audience.categories.values()
        ):
            raise invalid_resource(f'Cannot add "{title}" because it already exists on the list.')
        return body

    def _create_category(self, request: Request) -> Response:
        body = self._body(request)
        with self.lock:
            audience = self._audience(request)
            spec = self._validate_category(audience, body, creating=True)
            category = self._add_category(audience, spec)
            return self._ok(self._render_category(request, category))

    def _add_category(self, audience: Audience, spec: dict[str, Any]) -> InterestCategory:
        category_id = str(spec.get("id") or short_id("category", audience.id, self.next_category))
        self.next_category += 1
        category = InterestCategory(
            category_id,
            audience.id,
            spec["title"].strip(),
            spec.get("type", "checkboxes"),
            int(spec.get("display_order", len(audience.categories))),
        )
        audience.categories[category_id] = category
        return category

    def _update_category(self, request: Request) -> Response:
        body = self._body(request)
        with self.lock:
            audience = self._audience(request)
            category = self._category_of(audience, request)
            spec = self._validate_category(audience, body, creating=False, current=category)
            category.title = spec.get("title", category.title).strip()
            category.type = spec.get("type", category.type)
            category.display_order = spec.get("display_order", category.display_order)
            return self._ok(self._render_category(request, category))

    def _delete_category(self, request: Request) -> Response:
        with self.lock:
            audience = self._audience(request)
            category = self._category_of(audience, request)
            for interest in [i for i in audience.interests.values() if i.category_id == category.id]:
                self._drop_interest(audience, interest)
            del audience.categories[category.id]
        return self._no_content()

    def _interests(self, request: Request) -> Response:
        with self.lock:
            audience = self._audience(request)
            category = self._category_of(audience, request)
            items = [
                self._render_interest(request, audience, i)
                for i in sorted(audience.interests.values(), key=lambda i: (i.display_order, i.id))
                if i.category_id == category.id
            ]
        return self._page(
            request,
            items,
            shapes.INTEREST_LIST,
            "interests",
            f"/lists/{audience.id}/interest-categories/{category.id}/interests",
            {"list_id": audience.id, "category_id": category.id},
        )

    def _interest(self, request: Request) -> Response:
        projection = self._projection(request, shapes.INTEREST)
        with self.lock:
            audience = self._audience(request)
            interest = self._interest_of(audience, self._category_of(audience, request), request)
            body = self._render_interest(request, audience, interest)
        return self._ok(projection.apply(body))

    @staticmethod
    def _validate_interest(body: Any, creating: bool) -> None:
        if not isinstance(body, dict):
            raise field_error("", "Schema describes object")
        if creating and "name" not in body:
            raise missing_fields("name")
        if "name" in body and (not isinstance(body["name"], str) or not body["name"].strip()):
            raise field_error("name", "Schema describes string")
        if "display_order" in body and not isinstance(body["display_order"], int):
            raise field_error("display_order", "Schema describes integer")

    def _create_interest(self, request: Request) -> Response:
        body = self._body(request)
        with self.lock:
            audience = self._audience(request)
            category = self._category_of(audience, request)
            self._validate_interest(body, creating=True)
            interest = self._add_interest(audience, category, body)
            return self._ok(self._render_interest(request, audience, interest))

    def _add_interest(self, audience: Audience, category: InterestCategory, spec: dict[str, Any]) -> Interest:
        name = str(spec["name"]).strip()
        if any(i.category_id == category.id and i.name.lower() == name.lower() for i in audience.interests.values()):
            raise invalid_resource(f'Cannot add "{name}" because it already exists on the list.')
        interest_id = str(spec.get("id") or short_id("interest", audience.id, self.next_category))
        self.next_category += 1
        siblings = sum(1 for i in audience.interests.values() if i.category_id == category.id)
        interest = Interest(interest_id, category.id, audience.id, name, int(spec.get("display_order", siblings)))
        audience.interests[interest_id] = interest
        return interest

    def _update_interest(self, request: Request) -> Response:
        body = self._body(request)
        with self.lock:
            audience = self._audience(request)
            interest = self._interest_of(audience, self._category_of(audience, request), request)
            self._validate_interest(body, creating=False)
            interest.name = body.get("name", interest.name).strip()
            interest.display_order = body.get("display_order", interest.display_order)
            return self._ok(self._render_interest(request, audience, interest))

    def _delete_interest(self, request: Request) -> Response:
        with self.lock:
            audience = self._audience(request)
            self._drop_interest(audience, self._interest_of(audience, self._category_of(audience, request), request))
        return self._no_content()

    @staticmethod
    def _drop_interest(audience: Audience, interest: Interest) -> None:
        for member in audience.members.values():
            member.interests.discard(interest.id)
        del audience.interests[interest.id]

    # ---- webhooks --------------------------------------------------------------------------------------------
    def _render_webhook(self, request: Request, hook: Webhook) -> dict[str, Any]:
        return {
            "id": hook.id,
            "url": hook.url,
            "events": hook.events,
            "sources": hook.sources,
            "list_id": hook.list_id,
            "signing_enabled": bool(hook.signing_secret),
            "_links": self._links(
                request, f"/lists/{hook.list_id}/webhooks/{hook.id}", "self", "parent", "update", "delete"
            ),
        }

    def _webhooks(self, request: Request) -> Response:
        with self.lock:
            audience = self._audience(request)
            items = [self._render_webhook(request, h) for h in audience.webhooks.values()]
        return self._page(
            request,
            items,
            shapes.loose("webhooks", "list_id"),
            "webhooks",
            f"/lists/{audience.id}/webhooks",
            {"list_id": audience.id},
        )

    def _webhook(self, request: Request) -> Response:
        with self.lock:
            audience = self._audience(request)
            hook = audience.webhooks.get(unquote(request.params["webhook_id"]))
            if hook is None:
                raise not_found()
            return self._ok(self._render_webhook(request, hook))

    def _create_webhook(self, request: Request) -> Response:
        body = self._body(request)
        if not isinstance(body, dict):
            raise field_error("", "Schema describes object")
        url = body.get("url")
        if not isinstance(url, str) or not url:
            raise missing_fields("url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise field_error("url", "This value should be a valid URL.")
        choices = {}
        for name, allowed, default in (
            ("events", WEBHOOK_EVENTS, dict.fromkeys(WEBHOOK_EVENTS, True)),
            ("sources", WEBHOOK_SOURCES, {"user": True, "admin": True, "api": False}),
        ):
            given = body.get(name)
            if given is None:
                choices[name] = default
                continue
            if not isinstance(given, dict) or not all(isinstance(v, bool) for v in given.values()):
                raise field_error(name, "Schema describes object of booleans")
            choices[name] = {key: bool(given.get(key, False)) for key in allowed}
        with self.lock:
            if any(h.url == url for h in self._audience(request).webhooks.values()):
                raise invalid_resource(DUPLICATE_WEBHOOK)
        validate_url(url)  # the validator's GET, outside the lock: the receiver may call the API back
        with self.lock:
            audience = self._audience(request)
            if any(h.url == url for h in audience.webhooks.values()):
                raise invalid_resource(DUPLICATE_WEBHOOK)
            hook = Webhook(
                short_id("webhook", audience.id, len(audience.webhooks), url, self._now()),
                audience.id,
                url,
                choices["events"],
                choices["sources"],
                self._now(),
                signing_secret=new_signing_secret() if self.sign_webhooks else "",
            )
            audience.webhooks[hook.id] = hook
            created = self._render_webhook(request, hook)
            if hook.signing_secret:
                created["signing_secret"] = hook.signing_secret  # shown this once, never on a GET
            return self._ok(created)

    def _update_webhook(self, request: Request) -> Response:
        """PATCH: a new url (validated like a new webhook), and the events and sources named in the body."""
        body = self._body(request)
        if not isinstance(body, dict):
            raise field_error("", "Schema describes object")
        url = body.get("url")
        if url is not None and (not isinstance(url, str) or not urlsplit(url).netloc):
            raise field_error("url", "This value should be a valid URL.")
        for name in ("events", "sources"):
            given = body.get(name)
            if given is not None and (
                not isinstance(given, dict) or not all(isinstance(v, bool) for v in given.values())
            ):
                raise field_error(name, "Schema describes object of booleans")
        key = unquote(request.params["webhook_id"])
        with self.lock:
            audience = self._audience(request)
            if key not in audience.webhooks:
                raise not_found()
            if url is not None and any(h.url == url and h.id != key for h in audience.webhooks.values()):
                raise invalid_resource(DUPLICATE_WEBHOOK)
            moving = url is not None and url != audience.webhooks[key].url
        if moving:
            validate_url(url)
        with self.lock:
            hook = self._audience(request).webhooks.get(key)
            if hook is None:
                raise not_found()
            hook.url = url or hook.url
            for name, allowed in (("events", WEBHOOK_EVENTS), ("sources", WEBHOOK_SOURCES)):
                chosen = getattr(hook, name)
                chosen.update({k: v for k, v in (body.get(name) or {}).items() if k in allowed})
            return self._ok(self._render_webhook(request, hook))

    def _delete_webhook(self, request: Request) -> Response:
        with self.lock:
            audience = self._audience(request)
            hook = audience.webhooks.pop(unquote(request.params["webhook_id"]), None)
            if hook is None:
                raise not_found()
        self.webhook_deliveries.outbox.forget(lambda d: d.target != hook.id)
        return self._no_content()

    # ---- campaigns and reports ----------------------------------------------------------------------------------
    def _campaign_of(self, request: Request) -> Any:
        campaign = self.campaigns.campaigns.get(unquote(request.params["campaign_id"]))
        if campaign is None:
            raise not_found()
        return campaign

    def _list_campaigns(self, request: Request) -> Response:
        status = request.arg("status") or None
        if status is not None and status not in CAMPAIGN_STATUSES:
            raise bad_request(f"status must be one of: {', '.join(CAMPAIGN_STATUSES)}.")
        sort_field = request.arg("sort_field") or None
        if sort_field not in (None, "create_time", "send_time"):
            raise bad_request("sort_field must be one of: create_time, send_time.")
        sort_dir = request.arg("sort_dir") or "ASC"
        if sort_dir not in ("ASC", "DESC"):
            raise bad_request("sort_dir must be ASC or DESC.")
        bounds = {
            name: parse_filter(request.arg(name))
            for name in ("since_send_time", "before_send_time", "since_create_time", "before_create_time")
        }
        list_id = request.arg("list_id") or None
        with self.lock:
            chosen = []
            for campaign in self.campaigns.campaigns.values():
                if status and campaign.status != status:
                    continue
                if list_id and campaign.list_id != list_id:
                    continue
                send, create = campaign.send_time, campaign.create_time
                if bounds["since_send_time"] is not None and (send is None or not send > bounds["since_send_time"]):
                    continue
                if bounds["before_send_time"] is not None and (send is None or not send < bounds["before_send_time"]):
                    continue
                if bounds["since_create_time"] is not None and not create > bounds["since_create_time"]:
                    continue
                if bounds["before_create_time"] is not None and not create < bounds["before_create_time"]:
                    continue
                chosen.append(campaign)
            if sort_field:
                chosen.sort(key=lambda c: (getattr(c, sort_field) or 0, c.web_id), reverse=sort_dir == "DESC")
            items = [render_campaign(c, self._base(request)) for c in chosen]
        return self._page(request, items, shapes.loose("campaigns"), "campaigns", "/campaigns")

    def _campaign(self, request: Request) -> Response:
        with self.lock:
            return self._ok(render_campaign(self._campaign_of(request), self._base(request)))

    def _reports(self, request: Request) -> Response:
        """Reports of the sent campaigns, oldest send first (type, since/before_send_time, paging)."""
        campaign_type = request.arg("type") or None
        if campaign_type not in (None, "regular", "plaintext", "absplit", "rss", "variate"):
            raise bad_request("type must be one of: regular, plaintext, absplit, rss, variate.")
        since = parse_filter(request.arg("since_send_time"))
        before = parse_filter(request.arg("before_send_time"))
        with self.lock:
            chosen = sorted(
                (
                    c
                    for c in self.campaigns.campaigns.values()
                    if c.status == "sent"
                    and campaign_type in (None, "regular")
                    and (since is None or (c.send_time or 0) > since)
                    and (before is None or (c.send_time or 0) < before)
                ),
                key=lambda c: (c.send_time or 0, c.web_id),
            )
            items = [render_report(c, self._base(request)) for c in chosen]
        return self._page(request, items, shapes.loose("reports"), "reports", "/reports")

    def _report(self, request: Request) -> Response:
        with self.lock:
            campaign = self._campaign_of(request)
            if campaign.status != "sent":
                raise not_found()
            return self._ok(render_report(campaign, self._base(request)))

    def _report_page(
        self, request: Request, chosen: list[Any], render: Callable[[Any], Any], key: str, path: str, campaign_id: str
    ) -> Response:
        """A report collection paged before it is rendered: a page costs its own rows, not the campaign's."""
        projection = self._projection(request, shapes.loose(key, "campaign_id"))
        count, offset = self._paging(request)
        body = {
            key: [render(item) for item in chosen[offset : offset + count]],
            "campaign_id": campaign_id,
            "total_items": len(chosen),
            "_links": self._links(request, path, "self", "parent"),
        }
        return self._ok(projection.apply(body))

    def _sent_to(self, request: Request) -> Response:
        with self.lock:
            campaign = self._campaign_of(request)
            return self._report_page(
                request,
                list(campaign.recipients.values()),
                lambda r: render_sent_to(campaign, r),
                "sent_to",
                f"/reports/{campaign.id}/sent-to",
                campaign.id,
            )

    def _email_activity(self, request: Request) -> Response:
        since = parse_filter(request.arg("since"))
        with self.lock:
            campaign = self._campaign_of(request)
            chosen = [
                r
                for r in campaign.recipients.values()
                if since is None or (r.last_event is not None and r.last_event > since)
            ]
            return self._report_page(
                request,
                chosen,
                lambda r: render_email_activity(campaign, r, since),
                "emails",
                f"/reports/{campaign.id}/email-activity",
                campaign.id,
            )

    def _unsubscribed(self, request: Request) -> Response:
        with self.lock:
            campaign = self._campaign_of(request)
            return self._report_page(
                request,
                list(campaign.unsubscribes),
                lambda entry: render_unsubscribe(campaign, entry),
                "unsubscribes",
                f"/reports/{campaign.id}/unsubscribed",
                campaign.id,
            )

    # ---- batch operations ------------------------------------------------------------------------------------------
    def _start_batch(self, request: Request) -> Response:
        operations = batch_ops.validate_operations(self._body(request))
        with self.lock:
            batch = batch_ops.Batch(
                short_id("batch", len(self.batches), self._now()),
                self._credential(request) or "",
                operations,
                self._now(),
            )
            self.batches[batch.id] = batch
            return self._ok(batch_ops.render(batch, self._base(request), self._now()))

    def _list_batches(self, request: Request) -> Response:
        with self.lock:
            items = [batch_ops.render(b, self._base(request), self._now()) for b in self.batches.values()]
        return self._page(request, items, shapes.loose("batches"), "batches", "/batches")

    def _batch_of(self, request: Request) -> batch_ops.Batch:
        batch = self.batches.get(unquote(request.params["batch_id"]))
        if batch is None:
            raise not_found()
        return batch

    def _batch_status(self, request: Request) -> Response:
        with self.lock:
            batch = self._batch_of(request)
            if batch.status == "started":
                batch.status = "finished"
                batch.completed_at = self._now()
                batch.archive = batch_ops.build_archive(batch)
            elif batch.status == "pending":
                batch.status = "started"
                batch_ops.run(batch, lambda m, p, q, b: self._execute(request, m, p, q, b))
            return self._ok(batch_ops.render(batch, self._base(request), self._now()))

    def _delete_batch(self, request: Request) -> Response:
        with self.lock:
            batch = self._batch_of(request)
            del self.batches[batch.id]
        return self._no_content()

    def _execute(self, outer: Request, method: str, path: str, query: dict[str, str], body: str) -> tuple[int, str]:
        """One operation of a batch, through the same routes and rules as a direct call (the lock is held)."""
        full_path = path if path.startswith("/3.0/") else "/3.0" + path
        parts = urlsplit(full_path)
        headers = Message()
        headers["Host"] = outer.header("Host") or "127.0.0.1"
        merged = {**{k: v[0] for k, v in parse_qs(parts.query).items()}, **query}
        request = Request(
            method=method,
            path=parts.path,
            query={k: [v] for k, v in merged.items()},
            headers=headers,
            body=(body or "").encode(),
        )
        route, params, allowed = self.router.match(method, parts.path)
        if route is None or parts.path.startswith("/_batch-results/"):
            response = self.error(405 if allowed else 404, "", request)
        else:
            request.params = params
            response = self._run(route, request, new_request_id())
        return response.status, response.body.decode()

    def _batch_archive(self, request: Request) -> Response:
        name = unquote(request.params["archive"])
        with self.lock:
            batch = self.batches.get(name.removesuffix("-response.tar.gz"))
            expires = request.arg("Expires") or ""
            if batch is None or batch.status != "finished" or not name.endswith("-response.tar.gz"):
                return Response(404, b"<Error><Code>NoSuchKey</Code></Error>", {"Content-Type": "application/xml"})
            if not expires.isdigit() or int(expires) < self._now():
                return Response(
                    403,
                    b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                    {"Content-Type": "application/xml"},
                )
            return Response(200, batch.archive, {"Content-Type": "application/x-gzip"})


def _interest_match(member: Member, params: list[str | None]) -> bool:
    ids = set((params[1] or "").split(","))
    chosen = member.interests & ids
    if params[2] == "any":
        return bool(chosen)
    if params[2] == "all":
        return chosen == ids
    return not chosen
