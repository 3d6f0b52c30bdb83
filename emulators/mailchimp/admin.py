"""The Mailchimp emulator's admin API: seeding, state, settings, and what people and campaigns do.

These routes stand in for everything that happens in Mailchimp without the product's API calls: a
person unsubscribing through a link, signing up through a form, clicking a confirmation email,
bouncing, changing their address or preferences, and campaigns being sent and read. The package
docstring lists every route with its body.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from emulators.common import Request, Response, Router

from .audience import (
    DEFAULT_MERGE_FIELDS,
    MEMBER_STATUSES,
    Audience,
    MarketingPermission,
    Member,
    MergeField,
    long_id,
    short_id,
    subscriber_hash,
)
from .members import ADMIN_UNSUBSCRIBE_REASON, MemberRules
from .merge_fields import default_options
from .problems import ApiError
from .reports import CampaignBook
from .timestamps import format_epoch, parse_admin_time
from .webhooks import MailchimpDeliveries, WebhookEvents, render_webhook

DEFAULT_UNSUBSCRIBE_REASON = "I no longer want to receive these emails"
COMPLIANCE_MODES = ("documented", "strict")
WITHDRAWN_BY = ("person", "admin", "api")


class MailchimpAdmin:
    """The /_admin routes of ``MailchimpEmulator`` (mixed into it; ``self`` is the emulator)."""

    # what the mixin uses of the emulator
    lock: threading.RLock
    admin: Router
    _in_flight: Counter[str]
    _in_flight_lock: threading.Lock
    audiences: dict[str, Audience]
    confirmations: list[dict[str, Any]]
    fake_domains: set[str]
    rules: MemberRules
    campaigns: CampaignBook
    latency_seconds: float
    concurrency_limit: int
    last_members_scanned: int
    next_audience_web_id: int
    webhook_events: WebhookEvents
    webhook_deliveries: MailchimpDeliveries
    sign_webhooks: bool

    def _register_admin(self) -> None:
        add = self.admin.add
        add("GET", "/_admin/confirmations", self._admin(self._admin_confirmations))
        add("POST", "/_admin/settings", self._admin(self._admin_settings))
        add("GET", "/_admin/stats", self._admin(self._admin_stats))
        add("GET", "/_admin/webhooks", self._admin(self._admin_webhooks))
        add("POST", "/_admin/people/unsubscribe", self._admin(self._person_unsubscribe))
        add("POST", "/_admin/people/bulk-unsubscribe", self._admin(self._admin_bulk_unsubscribe))
        add("POST", "/_admin/people/resubscribe", self._admin(self._person_resubscribe))
        add("POST", "/_admin/people/confirm", self._admin(self._person_confirm))
        add("POST", "/_admin/people/bounce", self._admin(self._person_bounce))
        add("POST", "/_admin/people/change-email", self._admin(self._person_change_email))
        add("POST", "/_admin/people/preferences", self._admin(self._person_preferences))
        add("POST", "/_admin/campaigns", self._admin(self._admin_create_campaign))
        add("POST", "/_admin/campaigns/{campaign_id}/send", self._admin(self._admin_send_campaign))
        add("POST", "/_admin/campaigns/{campaign_id}/activity", self._admin(self._admin_campaign_activity))

    @staticmethod
    def _admin(handler: Callable[[Request], Any]) -> Callable[[Request], Response]:
        """Admin handlers return plain data; a refused action is a 400 that says why."""

        def wrapped(request: Request) -> Response:
            try:
                result = handler(request)
            except ApiError as problem:
                return Response.json(400, {"error": f"{problem.title}: {problem.detail}", "errors": problem.errors})
            return result if isinstance(result, Response) else Response.json(200, result)

        return wrapped

    def admin_seed(self, body: Any) -> Response:
        if not isinstance(body, dict):
            raise ValueError("the seed is a JSON object with audiences, interest_categories, members, forgotten")
        with self.lock:
            result = self._seed(body)
        return Response.json(200, result)

    def _seed(self, body: dict[str, Any]) -> dict[str, Any]:
        now = self._now()
        for spec in body.get("audiences", []):
            audience_id = str(spec["id"])
            merge_specs = spec.get("merge_fields") or [
                {"tag": t, "name": n, "type": k} for t, n, k in DEFAULT_MERGE_FIELDS
            ]
            audience = Audience(
                audience_id,
                str(spec.get("name", audience_id)),
                self.next_audience_web_id,
                now,
                double_optin=bool(spec.get("double_optin", False)),
                merge_fields=[
                    MergeField(
                        position + 1,
                        str(m["tag"]),
                        str(m.get("name", m["tag"])),
                        str(m.get("type", "text")),
                        bool(m.get("required", False)),
                        options=default_options(str(m.get("type", "text")), m.get("options")),
                    )
                    for position, m in enumerate(merge_specs)
                ],
                permissions=[
                    MarketingPermission(
                        str(p.get("id") or short_id("permission", audience_id, position)), str(p["text"])
                    )
                    for position, p in enumerate(spec.get("marketing_permissions") or [])
                ],
                new_tag_id=self.rules.new_tag_id,
            )
            self.next_audience_web_id += 1
            if audience_id in self.audiences:  # a seeded audience starts without webhooks
                self.webhook_deliveries.outbox.forget(lambda d, gone=audience_id: d.info.get("listId") != gone)
            self.audiences[audience_id] = audience
        categories = []
        for spec in body.get("interest_categories", []):
            audience = self._seed_audience(spec)
            self._validate_category(audience, spec, creating=True)
            category = self._add_category(audience, spec)
            interests = [self._add_interest(audience, category, i) for i in spec.get("interests", [])]
            categories.append(
                {
                    "list_id": audience.id,
                    "id": category.id,
                    "title": category.title,
                    "interests": [{"id": i.id, "name": i.name} for i in interests],
                }
            )
        touched: set[str] = set()
        for spec in body.get("members", []):
            audience = self._seed_audience(spec)
            self._seed_member(audience, spec, now)
            touched.add(audience.id)
        for audience_id in touched:
            self.audiences[audience_id].rebuild_indexes()
        for spec in body.get("forgotten", []):
            self._seed_audience(spec).forgotten.add(subscriber_hash(spec["email_address"]))
        return {
            "audiences": sorted(self.audiences),
            "interest_categories": categories,
            "members": sum(len(a.members) for a in self.audiences.values()),
        }

    def _seed_audience(self, spec: dict[str, Any]) -> Audience:
        audience = self.audiences.get(str(spec.get("list_id")))
        if audience is None:
            raise ValueError(f"unknown list_id {spec.get('list_id')!r}: seed the audience first")
        return audience

    def _seed_member(self, audience: Audience, spec: dict[str, Any], now: int) -> None:
        """A member as if it had always been there: no rules, no confirmation email, index rebuilt afterwards."""
        email = str(spec["email_address"])
        status = spec.get("status", "subscribed")
        if status not in MEMBER_STATUSES or "@" not in email:
            raise ValueError(
                f"member {subscriber_hash(email)}: status must be one of {MEMBER_STATUSES} "
                "and the address must contain @"
            )
        old = audience.members.pop(subscriber_hash(email), None)
        if old is not None:
            audience.by_contact.pop(old.contact_id, None)
        web_id = self.rules.next_web_id
        self.rules.next_web_id += 1
        member = Member(
            audience.id,
            email,
            status,
            contact_id=long_id("contact", audience.id, web_id),
            unique_email_id=short_id("email", web_id),
            web_id=web_id,
            now=parse_admin_time(spec.get("last_changed"), now),
            source="Import",
        )
        member.change_seq = self.rules.next_change
        self.rules.next_change += 1
        if status == "archived":
            member.status_before_archive = spec.get("status_before_archive", "subscribed")
        member.merge_fields = dict(spec.get("merge_fields") or {})
        chosen = spec.get("interests") or {}
        member.interests = {k for k, v in chosen.items() if v} if isinstance(chosen, dict) else set(chosen)
        for name in spec.get("tags") or []:
            tag = audience.tag_named(name, now, create=True)
            assert tag is not None
            member.tags[tag.id] = now
        if "timestamp_opt" in spec:
            member.timestamp_opt = parse_admin_time(spec["timestamp_opt"], now) if spec["timestamp_opt"] else None
        elif status == "subscribed":
            member.timestamp_opt = member.last_changed
        if spec.get("timestamp_signup"):
            member.timestamp_signup = parse_admin_time(spec["timestamp_signup"], now)
        member.vip = bool(spec.get("vip", False))
        member.language = str(spec.get("language", ""))
        before = member.status_before_archive if status == "archived" else status
        by = spec.get("unsubscribed_by")
        if by is not None and by not in WITHDRAWN_BY:
            raise ValueError(f"member {member.hash}: unsubscribed_by must be one of {WITHDRAWN_BY}")
        default_reason = ADMIN_UNSUBSCRIBE_REASON if by in ("admin", "api") else DEFAULT_UNSUBSCRIBE_REASON
        member.unsubscribe_reason = str(
            spec.get("unsubscribe_reason") or (default_reason if status == "unsubscribed" else "")
        )
        if before == "cleaned":
            member.withdrawn_by = "bounce"
        elif before == "unsubscribed" or by is not None:
            member.withdrawn_by = by or "person"  # a pending member may carry the unsubscribe it followed
        if before == "unsubscribed":
            member.unsubscribed_at = parse_admin_time(spec.get("unsubscribed_at"), member.last_changed)
        member.marketing_permissions = {str(k): bool(v) for k, v in (spec.get("marketing_permissions") or {}).items()}
        if spec.get("sms_phone_number"):
            member.sms_phone_number = str(spec["sms_phone_number"])
            member.sms_subscription_status = str(spec.get("sms_subscription_status", "subscribed"))
            member.sms_subscription_last_updated = format_epoch(member.last_changed) or ""
        audience.members[member.hash] = member
        audience.by_contact[member.contact_id] = member.hash

    def admin_state(self, request: Request) -> Response:
        list_id = request.arg("list_id")
        with self.lock:
            audiences = (
                [self.audiences[list_id]]
                if list_id in self.audiences
                else ([] if list_id else list(self.audiences.values()))
            )
            if list_id and not audiences:
                return Response.json(404, {"error": f"no audience {list_id}"})
            state = {
                "audiences": {a.id: self._audience_state(a) for a in audiences},
                "confirmations": [
                    dict(c, sent_at=format_epoch(c["sent_at"]))
                    for c in self.confirmations
                    if not list_id or c["list_id"] == list_id
                ],
            }
        return Response.json(200, state)

    def _audience_state(self, audience: Audience) -> dict[str, Any]:
        rules = self.rules

        def member_state(m: Member) -> dict[str, Any]:
            return {
                "email_address": m.email_address,
                "status": m.status,
                "status_before_archive": m.status_before_archive,
                "contact_id": m.contact_id,
                "last_changed": format_epoch(m.last_changed),
                "timestamp_opt": format_epoch(m.timestamp_opt),
                "unsubscribe_reason": m.unsubscribe_reason,
                "unsubscribed_at": format_epoch(m.unsubscribed_at),
                "unsubscribed_by": m.withdrawn_by,
                "in_compliance_state": rules.in_compliance_state(m),
                "marketing_permissions": dict(m.marketing_permissions),
                "merge_fields": m.merge_fields,
                "interests": sorted(m.interests),
                "tags": [audience.tags[t].name for t in m.tags],
                "vip": m.vip,
            }

        return {
            "name": audience.name,
            "double_optin": audience.double_optin,
            "counts": {status: audience.count(status) for status in MEMBER_STATUSES},
            "members": {m.hash: member_state(m) for m in audience.members.values()},
            "forgotten": sorted(audience.forgotten),
            "tags": {t.id: t.name for t in audience.tags.values()},
            "marketing_permissions": {p.id: p.text for p in audience.permissions},
            "webhooks": [render_webhook(h) for h in audience.webhooks.values()],
        }

    def _admin_confirmations(self, request: Request) -> Any:
        list_id = request.arg("list_id")
        with self.lock:
            emails = [
                dict(c, sent_at=format_epoch(c["sent_at"]))
                for c in self.confirmations
                if not list_id or c["list_id"] == list_id
            ]
        return {"confirmations": emails}

    def _admin_settings(self, request: Request) -> Any:
        body = request.json()
        with self.lock:
            if "fakeDomains" in body:
                self.fake_domains.clear()
                self.fake_domains.update(str(d).lower() for d in body["fakeDomains"])
            if "latencySeconds" in body:
                self.latency_seconds = float(body["latencySeconds"])
            if "concurrencyLimit" in body:
                self.concurrency_limit = int(body["concurrencyLimit"])
            if "compliance" in body:
                if body["compliance"] not in COMPLIANCE_MODES:
                    raise ValueError(f"compliance must be one of {COMPLIANCE_MODES}")
                self.rules.strict_compliance = body["compliance"] == "strict"
            if "signWebhooks" in body:
                self.sign_webhooks = bool(body["signWebhooks"])
            return {
                "fakeDomains": sorted(self.fake_domains),
                "latencySeconds": self.latency_seconds,
                "concurrencyLimit": self.concurrency_limit,
                "compliance": "strict" if self.rules.strict_compliance else "documented",
                "signWebhooks": self.sign_webhooks,
            }

    def _admin_stats(self, request: Request) -> Any:
        with self._in_flight_lock:
            in_flight = sum(self._in_flight.values())
        return {"lastMembersScanned": self.last_members_scanned, "inFlight": in_flight}

    def _admin_webhooks(self, request: Request) -> Any:
        list_id = request.arg("list_id")
        with self.lock:
            hooks = [
                render_webhook(h)
                for a in self.audiences.values()
                for h in a.webhooks.values()
                if not list_id or a.id == list_id
            ]
        return {"webhooks": hooks}

    def _person(self, body: dict[str, Any]) -> tuple[Audience, Member, int]:
        audience = self._seed_audience(body)
        key = body.get("subscriber_hash") or subscriber_hash(str(body.get("email_address", "")))
        member = audience.members.get(key)
        if member is None:
            raise ValueError(f"member {key} is not in audience {audience.id}")
        return audience, member, parse_admin_time(body.get("at"), self._now())

    def _person_unsubscribe(self, request: Request) -> Any:
        body = request.json()
        with self.lock, self.webhook_events.acting("user"):
            audience, member, at = self._person(body)
            by = body.get("by", "person")
            if by not in ("person", "admin"):
                raise ValueError("by must be person (their own unsubscribe) or admin (an admin in the web app)")
            reason = str(body.get("reason") or DEFAULT_UNSUBSCRIBE_REASON)
            admin = by == "admin"  # an admin's unsubscribe is data[reason] "manual", whatever was typed
            with self.webhook_events.acting("admin" if admin else "user", reason="" if admin else reason):
                self.rules.person_unsubscribe(audience, member, reason, at, by=by)
            return self._person_result(audience, member)

    def _admin_bulk_unsubscribe(self, request: Request) -> Any:
        """An admin unsubscribes many addresses at once in the web app (one webhook event each, source admin)."""
        body = request.json()
        keys = [subscriber_hash(str(e)) for e in body.get("email_addresses") or []]
        keys += [str(h) for h in body.get("subscriber_hashes") or []]
        with self.lock, self.webhook_events.acting("admin"):
            audience = self._seed_audience(body)
            at = parse_admin_time(body.get("at"), self._now())
            done, missing = 0, []
            for key in keys:
                member = audience.members.get(key)
                if member is None or member.status == "archived":
                    missing.append(key)
                    continue
                if member.status != "unsubscribed":
                    self.rules.person_unsubscribe(audience, member, DEFAULT_UNSUBSCRIBE_REASON, at, by="admin")
                    done += 1
            return {"list_id": audience.id, "unsubscribed": done, "missing": missing}

    def _person_resubscribe(self, request: Request) -> Any:
        body = request.json()
        with self.lock, self.webhook_events.acting("user"):
            audience = self._seed_audience(body)
            at = parse_admin_time(body.get("at"), self._now())
            member = self.rules.person_signup(audience, str(body["email_address"]), at, body.get("merge_fields"))
            return self._person_result(audience, member)

    def _person_confirm(self, request: Request) -> Any:
        body = request.json()
        with self.lock, self.webhook_events.acting("user"):
            audience, member, at = self._person(body)
            self.rules.person_confirm(audience, member, at)
            return self._person_result(audience, member)

    def _person_bounce(self, request: Request) -> Any:
        body = request.json()
        with self.lock, self.webhook_events.acting("user"):
            audience, member, at = self._person(body)
            if body.get("type", "hard") == "hard":
                self.rules.clean(audience, member, at)
            return self._person_result(audience, member)

    def _person_change_email(self, request: Request) -> Any:
        body = request.json()
        with self.lock, self.webhook_events.acting("user"):
            audience, member, at = self._person(body)
            self.rules.person_change_email(audience, member, str(body["new_email_address"]), at)
            return self._person_result(audience, member)

    def _person_preferences(self, request: Request) -> Any:
        body = request.json()
        with self.lock, self.webhook_events.acting("user"):
            audience, member, at = self._person(body)
            self.rules.person_edit(audience, member, body.get("interests"), body.get("merge_fields"), at)
            return self._person_result(audience, member)

    @staticmethod
    def _person_result(audience: Audience, member: Member) -> dict[str, Any]:
        return {
            "subscriber_hash": member.hash,
            "status": member.status,
            "email_address": member.email_address,
            "last_changed": format_epoch(member.last_changed),
            "contact_id": member.contact_id,
            "list_id": audience.id,
        }

    def _admin_create_campaign(self, request: Request) -> Any:
        body = request.json()
        with self.lock:
            audience = self._seed_audience(body)
            campaign = self.campaigns.create(audience, body, parse_admin_time(body.get("create_time"), self._now()))
            if body.get("send"):
                self.campaigns.send(campaign, audience, parse_admin_time(body.get("send_time"), self._now()))
                self.webhook_events.campaign_sent(audience, campaign)
            return {"id": campaign.id, "status": campaign.status, "recipients": len(campaign.recipients)}

    def _admin_send_campaign(self, request: Request) -> Any:
        body = self._body(request)
        with self.lock:
            campaign = self._campaign_of(request)
            audience = self.audiences[campaign.list_id]
            self.campaigns.send(campaign, audience, parse_admin_time(body.get("at"), self._now()))
            self.webhook_events.campaign_sent(audience, campaign)
            return {
                "id": campaign.id,
                "status": campaign.status,
                "recipients": len(campaign.recipients),
                "send_time": format_epoch(campaign.send_time),
            }

    def _admin_campaign_activity(self, request: Request) -> Any:
        """Opens, clicks, bounces and unsubscribes; a hard bounce cleans the member, an unsubscribe unsubscribes."""
        body = self._body(request)
        events = body.get("events") if isinstance(body.get("events"), list) else [body]
        with self.lock:
            campaign = self._campaign_of(request)
            audience = self.audiences[campaign.list_id]
            for event in events:
                key = event.get("subscriber_hash") or subscriber_hash(str(event.get("email_address", "")))
                recipient = campaign.recipients.get(key)
                if recipient is None:
                    raise ValueError(f"member {key} did not receive campaign {campaign.id}")
                at = parse_admin_time(event.get("at"), self._now())
                action = str(event.get("action"))
                self.campaigns.record(campaign, recipient, action, at, event)
                member = audience.members.get(recipient.hash)
                if member is None:
                    continue
                reason = str(event.get("reason") or DEFAULT_UNSUBSCRIBE_REASON)
                with self.webhook_events.acting("user", campaign_id=campaign.id, reason=reason):
                    if action == "bounce" and event.get("type", "hard") == "hard":
                        self.rules.clean(audience, member, at)
                    elif action == "unsubscribe":
                        self.rules.person_unsubscribe(audience, member, reason, at)
            return {"id": campaign.id, "recorded": len(events)}
