"""The member rules: what each write endpoint accepts, refuses and changes.

Everything here is plain Python over an ``Audience``; the HTTP layer (``emulator.py``) only parses the
request, takes the lock and renders the result. A refused write raises ``ApiError`` before it changes
anything, so a failed call leaves the member exactly as it was.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import merge_fields
from .audience import (
    PATCH_STATUSES,
    WRITABLE_STATUSES,
    Audience,
    Member,
    long_id,
    short_id,
    subscriber_hash,
)
from .problems import (
    ApiError,
    compliance_state,
    fake_email,
    field_error,
    forgotten_email,
    invalid_resource,
    member_exists,
    missing_fields,
)
from .timestamps import parse_body_timestamp

# Addresses under these top-level domains can never receive mail (RFC 2606 / RFC 6761).
RESERVED_TLDS = frozenset({"test", "invalid", "localhost", "example", "local"})

_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_TLD = re.compile(r"^[A-Za-z]{2,63}$")

# the member's unsubscribe_reason after an admin's (web app) or an API unsubscribe; see the package docstring
ADMIN_UNSUBSCRIBE_REASON = "N/A (Unsubscribed by admin)"
BATCH_MAX_MEMBERS = 500


def email_is_real(address: str, fake_domains: frozenset[str] | set[str]) -> bool:
    """Syntactically valid, under a real top-level domain, and not on the configured list of fake domains."""
    if not isinstance(address, str):
        return False
    address = address.strip()
    if len(address) > 254 or address.count("@") != 1 or any(c.isspace() for c in address):
        return False
    local, domain = address.split("@")
    if not local or len(local) > 64 or not _LOCAL_PART.match(local):
        return False
    labels = domain.lower().split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.match(label) for label in labels) or not _TLD.match(labels[-1]):
        return False
    if labels[-1] in RESERVED_TLDS:
        return False
    return not any(domain.lower() == fake or domain.lower().endswith("." + fake) for fake in fake_domains)


_JSON_TYPE_NAMES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    dict: "object",
    list: "array",
    type(None): "NULL",
}


def _type_name(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _mismatch(field_name: str, expected: str, value: Any) -> dict[str, str]:
    return {"field": field_name, "message": f"Schema describes {expected}, {_type_name(value)} found instead"}


@dataclass
class MemberInput:
    """A member body after schema validation; ``None`` means the field was not sent."""

    email_address: str | None = None
    status: str | None = None
    status_if_new: str | None = None
    merge_fields: dict[str, Any] | None = None
    interests: dict[str, bool] | None = None
    vip: bool | None = None
    language: str | None = None
    email_type: str | None = None
    ip_signup: str | None = None
    ip_opt: str | None = None
    timestamp_opt: int | None = None
    timestamp_signup: int | None = None
    tags: list[str] | None = None
    location: dict[str, float] | None = None
    marketing_permissions: dict[str, bool] | None = None
    errors: list[dict[str, str]] = field(default_factory=list)


def parse_member(
    body: Any, *, statuses: tuple[str, ...], status_if_new: bool, tags: bool, nullable: bool, prefix: str = ""
) -> MemberInput:
    """Validate one member body against the endpoint's schema; schema errors are collected in ``.errors``."""
    parsed = MemberInput()
    errors = parsed.errors
    if not isinstance(body, dict):
        errors.append(_mismatch(prefix.rstrip("."), "object", body))
        return parsed

    def typed(name: str, kinds: tuple[type, ...], expected: str) -> Any:
        value = body.get(name)
        if name not in body or (value is None and nullable):
            return None
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            errors.append(_mismatch(prefix + name, expected, value))
            return None
        return value

    parsed.email_address = typed("email_address", (str,), "string")
    for name in ("status", "status_if_new"):
        if name == "status_if_new" and not status_if_new:
            continue
        value = typed(name, (str,), "string")
        if value is not None and value not in statuses:
            errors.append({"field": prefix + name, "message": f"Value must be one of: {', '.join(statuses)}"})
            value = None
        setattr(parsed, name, value)
    merge = typed("merge_fields", (dict,), "object")
    if merge is not None:
        for tag, value in merge.items():
            if not isinstance(value, (str, int, float, bool, dict)):
                errors.append(
                    {
                        "field": f"{prefix}merge_fields.{tag}",
                        "message": "Data did not match any of the schemas described in anyOf.",
                    }
                )
        parsed.merge_fields = merge
    interests = typed("interests", (dict,), "object")
    if interests is not None:
        for interest_id, value in interests.items():
            if not isinstance(value, bool) and not (value is None and nullable):
                errors.append(
                    {
                        "field": f"{prefix}interests.{interest_id}",
                        "message": f"Schema describes boolean, {_type_name(value)} found instead",
                    }
                )
        parsed.interests = {k: bool(v) for k, v in interests.items()}
    parsed.vip = typed("vip", (bool,), "boolean")
    parsed.language = typed("language", (str,), "string")
    email_type = typed("email_type", (str,), "string")
    if email_type is not None and email_type not in ("html", "text"):
        errors.append({"field": prefix + "email_type", "message": "Value must be one of: html, text"})
    parsed.email_type = email_type
    for name in ("ip_signup", "ip_opt"):
        value = typed(name, (str,), "string")
        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                errors.append({"field": prefix + name, "message": "This value is not a valid IP address."})
        setattr(parsed, name, value)
    for name in ("timestamp_opt", "timestamp_signup"):
        value = typed(name, (str,), "string")
        if value:
            epoch = parse_body_timestamp(value)
            if epoch is None:
                errors.append(
                    {"field": prefix + name, "message": "Data did not match any of the schemas described in anyOf."}
                )
            setattr(parsed, name, epoch)
    if tags:
        tag_list = typed("tags", (list,), "array")
        if tag_list is not None:
            for position, tag in enumerate(tag_list):
                if not isinstance(tag, str):
                    errors.append(
                        {
                            "field": f"{prefix}tags.item:{position}",
                            "message": f"Schema describes string, {_type_name(tag)} found instead",
                        }
                    )
            parsed.tags = [t for t in tag_list if isinstance(t, str)]
    location = typed("location", (dict,), "object")
    if location is not None:
        parsed.location = {
            k: float(v) for k, v in location.items() if k in ("latitude", "longitude") and isinstance(v, (int, float))
        }
    permissions = typed("marketing_permissions", (list,), "array")
    if permissions is not None:
        parsed.marketing_permissions = {}
        for position, item in enumerate(permissions):
            where = f"{prefix}marketing_permissions.item:{position}"
            if not isinstance(item, dict) or not isinstance(item.get("marketing_permission_id"), str):
                errors.append({"field": where, "message": "Required fields were not provided: marketing_permission_id"})
            elif not isinstance(item.get("enabled"), bool):
                errors.append(_mismatch(where + ".enabled", "boolean", item.get("enabled")))
            else:
                parsed.marketing_permissions[item["marketing_permission_id"]] = item["enabled"]
    return parsed


def require_valid(parsed: MemberInput) -> MemberInput:
    if parsed.errors:
        raise invalid_resource(errors=parsed.errors)
    return parsed


class MemberRules:
    """The writes of the member endpoints against one account's audiences.

    ``now`` gives the emulator clock in epoch seconds, ``fake_domains`` the configurable list of refused
    domains, and ``confirmations`` receives one entry per double opt-in email the service would send.
    ``strict_compliance`` makes every unsubscribe a compliance state (the API may never re-subscribe), where
    the documented service holds only the person's own unsubscribe and a bounce.
    """

    def __init__(
        self,
        now: Callable[[], int],
        fake_domains: set[str],
        confirmations: list[dict[str, Any]],
        strict_compliance: bool = False,
    ) -> None:
        self.now = now
        self.fake_domains = fake_domains
        self.confirmations = confirmations
        self.strict_compliance = strict_compliance
        self.next_web_id = 100_000_001
        self.next_change = 1
        self.next_tag_id = 10_001
        self.observer: Any = None  # told before and after every write (the webhooks); None: nobody listens

    def new_tag_id(self) -> int:
        """Segment and tag ids are unique across the account, not per audience."""
        self.next_tag_id += 1
        return self.next_tag_id - 1

    # ---- shared checks ----------------------------------------------------------------------
    def check_address(self, audience: Audience, email: str | None) -> str:
        if email is None:
            raise missing_fields("email_address")
        if not email_is_real(email, self.fake_domains):
            raise fake_email(email)
        if subscriber_hash(email) in audience.forgotten:
            raise forgotten_email(email.strip())
        return email.strip()

    def in_compliance_state(self, member: Member) -> bool:
        """The person unsubscribed or the address bounced (or, strictly, anyone unsubscribed them), and the
        person has not signed up or confirmed since: an API write may not make them subscribed."""
        if member.withdrawn_by in ("person", "bounce"):
            return True
        return self.strict_compliance and member.withdrawn_by is not None

    def check_transition(self, member: Member | None, email: str, new: str) -> None:
        """Subscribed needs the person's own consent after a compliance state; pending is fine unless bounced.

        Pending does not lift the state: only the person's click on the confirmation (or a signup form) does,
        so a PATCH to pending followed by a PATCH to subscribed is refused like the direct PATCH.
        """
        if member is None:
            return
        if new == "subscribed" and self.in_compliance_state(member):
            raise compliance_state(email)
        if new == "pending" and member.withdrawn_by == "bounce":
            raise compliance_state(email)

    @staticmethod
    def check_permissions(audience: Audience, permissions: dict[str, bool] | None) -> None:
        known = {p.id for p in audience.permissions}
        for permission_id in permissions or {}:
            if permission_id not in known:
                raise invalid_resource(f"Invalid marketing permission ID: '{permission_id}'.")

    @staticmethod
    def check_merge_fields(
        audience: Audience, merge: dict[str, Any] | None, current: dict[str, Any], creating: bool, skip_validation: bool
    ) -> dict[str, Any]:
        """The merge values to store (unknown tags are dropped), or Invalid Resource naming each bad field."""
        return merge_fields.check_merge_fields(audience, merge, current, creating, skip_validation)

    @staticmethod
    def check_interests(audience: Audience, interests: dict[str, bool] | None) -> None:
        for interest_id in interests or {}:
            if interest_id not in audience.interests:
                raise invalid_resource(f"Invalid interest ID: '{interest_id}'.")

    # ---- the three single-member writes -----------------------------------------------------
    def create(self, audience: Audience, body: Any, skip_merge_validation: bool) -> Member:
        """POST /lists/{id}/members: a new member; an existing one is Member Exists."""
        parsed = require_valid(
            parse_member(body, statuses=WRITABLE_STATUSES, status_if_new=False, tags=True, nullable=False)
        )
        if parsed.status is None:
            raise missing_fields("status")
        email = self.check_address(audience, parsed.email_address)
        existing = audience.members.get(subscriber_hash(email))
        if existing is not None and existing.status != "archived":
            raise member_exists(email)
        return self._add(audience, email, parsed.status, parsed, existing, skip_merge_validation)

    def upsert(self, audience: Audience, path_hash: str, body: Any, skip_merge_validation: bool) -> Member:
        """PUT /lists/{id}/members/{hash}: update the member at the path, or add the body's address."""
        parsed = require_valid(
            parse_member(body, statuses=WRITABLE_STATUSES, status_if_new=True, tags=False, nullable=False)
        )
        existing = audience.members.get(path_hash)
        if existing is not None and existing.status != "archived":
            return self._update(audience, existing, parsed, parsed.status, skip_merge_validation)
        email = self.check_address(audience, parsed.email_address)
        body_hash = subscriber_hash(email)
        if existing is None and body_hash != path_hash:
            other = audience.members.get(body_hash)
            if other is not None and other.status != "archived":
                raise member_exists(email)
            existing = other
        status = parsed.status_if_new or parsed.status
        if status is None:
            raise missing_fields("status_if_new")
        if existing is not None and existing.hash != body_hash:
            # re-adding an archived member under a new address: an address change plus a status
            self._check_new_address(audience, existing, email, allow_archived=True)
        return self._add(audience, email, status, parsed, existing, skip_merge_validation)

    def update(self, audience: Audience, member: Member, body: Any, skip_merge_validation: bool) -> Member:
        """PATCH /lists/{id}/members/{hash}: change only what the body names."""
        parsed = require_valid(
            parse_member(body, statuses=PATCH_STATUSES, status_if_new=False, tags=False, nullable=False)
        )
        return self._update(audience, member, parsed, parsed.status, skip_merge_validation)

    # ---- archive and forget -----------------------------------------------------------------
    def archive(self, audience: Audience, member: Member) -> None:
        if member.status == "archived":
            return
        seen = self._seen(member)
        audience.unindex(member)
        member.status_before_archive = member.status
        member.status = "archived"
        self._touch(member)
        audience.index(member)
        self._changed(audience, member, seen)

    def forget(self, audience: Audience, member: Member) -> None:
        seen = None if member.status == "archived" else self._seen(member)
        audience.remove(member)
        audience.forgotten.add(member.hash)
        if seen is not None:
            self._changed(audience, member, seen, removed=True)

    # ---- batch subscribe ---------------------------------------------------------------------
    def batch_subscribe(
        self, audience: Audience, body: Any, skip_merge_validation: bool, skip_duplicate_check: bool
    ) -> tuple[list[Member], list[Member], list[dict[str, str]]]:
        """POST /lists/{id}: up to 500 members; one member's refusal is an entry in errors, never the call's."""
        if not isinstance(body, dict):
            raise field_error("", f"Schema describes object, {_type_name(body)} found instead")
        members = body.get("members")
        if "members" not in body:
            raise missing_fields("members")
        if not isinstance(members, list):
            raise field_error("members", f"Schema describes array, {_type_name(members)} found instead")
        if len(members) > BATCH_MAX_MEMBERS:
            raise invalid_resource(
                f"You may only submit up to {BATCH_MAX_MEMBERS} members per request; this request had {len(members)}.",
                [{"field": "members", "message": f"Array must have at most {BATCH_MAX_MEMBERS} items"}],
            )
        update_existing = body.get("update_existing")
        sync_tags = body.get("sync_tags")
        schema_errors: list[dict[str, str]] = []
        for name, value in (("update_existing", update_existing), ("sync_tags", sync_tags)):
            if value is not None and not isinstance(value, bool):
                schema_errors.append(_mismatch(name, "boolean", value))
        inputs = []
        for position, item in enumerate(members):
            parsed = parse_member(
                item,
                statuses=WRITABLE_STATUSES,
                status_if_new=True,
                tags=True,
                nullable=True,
                prefix=f"members.item:{position}.",
            )
            if not parsed.errors and parsed.status is None and parsed.status_if_new is None:
                parsed.errors.append(
                    {
                        "field": f"members.item:{position}",
                        "message": "Required fields were not provided: status or status_if_new",
                    }
                )
            schema_errors += parsed.errors
            inputs.append(parsed)
        if schema_errors:
            raise invalid_resource(errors=schema_errors)

        created: list[Member] = []
        updated: list[Member] = []
        errors: list[dict[str, str]] = []
        seen: set[str] = set()
        for parsed in inputs:
            email_text = (parsed.email_address or "").strip()
            try:
                if not email_text:
                    raise invalid_resource("Please provide a valid email address.")
                member_hash = subscriber_hash(email_text)
                if member_hash in seen:
                    if skip_duplicate_check:
                        continue
                    raise invalid_resource(
                        f"{email_text} appears more than once in this request. Send each address "
                        "once, or set skip_duplicate_check to keep the first."
                    )
                seen.add(member_hash)
                existing = audience.members.get(member_hash)
                if existing is not None and existing.status != "archived":
                    if not update_existing:
                        raise ApiError(
                            400,
                            "ERROR_CONTACT_EXISTS",
                            f"{existing.email_address} is already a list member, do you want to update? "
                            "please provide update_existing:true in the request body",
                        )
                    member = self._update(
                        audience, existing, parsed, parsed.status, skip_merge_validation, replace_tags=bool(sync_tags)
                    )
                    updated.append(member)
                else:
                    email = self.check_address(audience, email_text)
                    status = parsed.status_if_new or parsed.status
                    assert status is not None
                    created.append(self._add(audience, email, status, parsed, existing, skip_merge_validation))
            except ApiError as refusal:
                errors.append(_batch_error(email_text, refusal))
        return created, updated, errors

    # ---- what people do in Mailchimp (the admin routes) -------------------------------------
    def person_unsubscribe(self, audience: Audience, member: Member, reason: str, at: int, by: str = "person") -> None:
        """The person unsubscribes (a link, their profile, a campaign's footer), or an admin does in the web app."""

        def change() -> None:
            if member.status != "unsubscribed":
                member.status = "unsubscribed"
                member.unsubscribe_reason = reason if by == "person" else ADMIN_UNSUBSCRIBE_REASON
                member.unsubscribed_at = at
                audience.last_unsub_date = at
            member.withdrawn_by = _withdrawal(member.withdrawn_by, by)

        self._person_write(audience, member, at, change)

    def person_signup(self, audience: Audience, email: str, at: int, merge_fields: dict[str, Any] | None) -> Member:
        """A signup form: the person's own consent, so it works after an unsubscribe, a bounce or a forget."""
        if not email_is_real(email, self.fake_domains):
            raise fake_email(email)
        audience.forgotten.discard(subscriber_hash(email))
        status = "pending" if audience.double_optin else "subscribed"
        member = audience.members.get(subscriber_hash(email))
        if member is None:
            parsed = MemberInput(merge_fields=merge_fields)
            member = self._add(audience, email.strip(), status, parsed, None, skip_merge_validation=True)
            member.source = "Hosted Signup Form"
            return member
        prior = member.status_before_archive if member.status == "archived" else member.status

        def change() -> None:
            member.merge_fields.update({k: v for k, v in (merge_fields or {}).items() if audience.merge_field(k)})
            if member.status != status:
                member.status = status
                member.status_before_archive = None
                self._enter_status(audience, member, prior, status, MemberInput(), at)
            if status == "subscribed":
                member.withdrawn_by = None  # the person's own signup lifts a compliance state

        self._person_write(audience, member, at, change)
        return member

    def person_confirm(self, audience: Audience, member: Member, at: int) -> None:
        """The person clicks the link in the confirmation email."""
        if member.status != "pending":
            raise ValueError(f"member {member.hash} is {member.status}, not pending; only a pending member can confirm")

        def change() -> None:
            member.status = "subscribed"
            member.timestamp_opt = at
            member.withdrawn_by = None  # the person's own confirmation lifts a compliance state
            audience.last_sub_date = at

        self._person_write(audience, member, at, change)

    def clean(self, audience: Audience, member: Member, at: int) -> None:
        """A hard bounce: the address is cleaned and can no longer be subscribed through the API."""

        def change() -> None:
            if member.status != "archived":
                member.status = "cleaned"
            member.withdrawn_by = "bounce"

        self._person_write(audience, member, at, change)

    def person_change_email(self, audience: Audience, member: Member, new_email: str, at: int) -> None:
        """The person updates their address in their profile; contact_id and history stay."""
        if subscriber_hash(new_email) == member.hash:
            return
        if not email_is_real(new_email, self.fake_domains):
            raise fake_email(new_email)
        if subscriber_hash(new_email) in audience.members:
            raise ValueError(f"the new address is already member {subscriber_hash(new_email)} of the audience")

        def change() -> None:
            del audience.members[member.hash]
            member.email_address = new_email.strip()
            member.hash = subscriber_hash(new_email)
            audience.members[member.hash] = member

        self._person_write(audience, member, at, change)

    def person_edit(
        self,
        audience: Audience,
        member: Member,
        interests: dict[str, bool] | None,
        merge_fields: dict[str, Any] | None,
        at: int,
    ) -> None:
        """The person edits their preferences (interests, profile fields) through the profile page."""
        self.check_interests(audience, interests)

        def change() -> None:
            self._apply_fields(audience, member, MemberInput(interests=interests))
            member.merge_fields.update({k: v for k, v in (merge_fields or {}).items() if audience.merge_field(k)})

        self._person_write(audience, member, at, change)

    def _person_write(self, audience: Audience, member: Member, at: int, change: Callable[[], None]) -> None:
        seen = self._seen(member)
        audience.unindex(member)
        before = member.consent_snapshot()
        change()
        if member.consent_snapshot() != before:
            self._touch(member, at)
        audience.index(member)
        self._changed(audience, member, seen)

    # ---- what the observer hears --------------------------------------------------------------
    def _seen(self, member: Member | None) -> Any:
        return None if self.observer is None else self.observer.before(member)

    def _changed(self, audience: Audience, member: Member, seen: Any, removed: bool = False) -> None:
        if self.observer is not None:
            self.observer.after(audience, member, seen, removed)

    # ---- internals ---------------------------------------------------------------------------
    def _touch(self, member: Member, at: int | None = None) -> None:
        member.last_changed = self.now() if at is None else at
        member.change_seq = self.next_change
        self.next_change += 1

    def _add(
        self,
        audience: Audience,
        email: str,
        status: str,
        parsed: MemberInput,
        archived: Member | None,
        skip_merge_validation: bool,
    ) -> Member:
        """A new member, or an archived one coming back (which keeps its ids and its compliance history)."""
        if archived is not None:
            self.check_transition(archived, email, status)
        seen = self._seen(archived)
        merge = self.check_merge_fields(
            audience,
            parsed.merge_fields,
            archived.merge_fields if archived else {},
            creating=True,
            skip_validation=skip_merge_validation,
        )
        self.check_interests(audience, parsed.interests)
        self.check_permissions(audience, parsed.marketing_permissions)
        now = self.now()
        if archived is None:
            sequence = self.next_web_id
            self.next_web_id += 1
            member = Member(
                audience.id,
                email,
                status,
                contact_id=long_id("contact", audience.id, sequence),
                unique_email_id=short_id("email", sequence),
                web_id=sequence,
                now=now,
            )
            prior = None
        else:
            member = archived
            audience.unindex(member)
            prior = member.status_before_archive
            if member.hash != subscriber_hash(email):
                del audience.members[member.hash]
                member.email_address = email
                member.hash = subscriber_hash(email)
                audience.members[member.hash] = member
            member.status = status
            member.status_before_archive = None
        member.merge_fields.update(merge)
        self._apply_fields(audience, member, parsed)
        self._enter_status(audience, member, prior, status, parsed, now)
        if parsed.tags:
            for name in parsed.tags:
                tag = audience.tag_named(name, now, create=True)
                assert tag is not None
                member.tags.setdefault(tag.id, now)
        self._touch(member)
        if archived is None:
            audience.add(member)
        else:
            audience.index(member)
        self._changed(audience, member, seen)
        return member

    def _update(
        self,
        audience: Audience,
        member: Member,
        parsed: MemberInput,
        status: str | None,
        skip_merge_validation: bool,
        replace_tags: bool = False,
    ) -> Member:
        """Change an existing member; ``last_changed`` moves only when something really changed."""
        new_email = None
        if parsed.email_address is not None and subscriber_hash(parsed.email_address) != member.hash:
            new_email = parsed.email_address.strip()
            self._check_new_address(audience, member, new_email, allow_archived=False)
        prior = member.status_before_archive if member.status == "archived" else member.status
        if status is not None and status != member.status:
            self.check_transition(member, member.email_address, status)
        merge = self.check_merge_fields(
            audience, parsed.merge_fields, member.merge_fields, creating=False, skip_validation=skip_merge_validation
        )
        self.check_interests(audience, parsed.interests)
        self.check_permissions(audience, parsed.marketing_permissions)

        now = self.now()
        seen = self._seen(member)
        before = member.consent_snapshot()
        audience.unindex(member)
        if new_email is not None:
            del audience.members[member.hash]
            member.email_address = new_email
            member.hash = subscriber_hash(new_email)
            audience.members[member.hash] = member
        member.merge_fields.update(merge)
        self._apply_fields(audience, member, parsed)
        if status is not None and status != member.status:
            if member.status == "archived":
                member.status_before_archive = None
            member.status = status
            self._enter_status(audience, member, prior, status, parsed, now)
        if parsed.tags is not None:
            wanted = []
            for name in parsed.tags:
                tag = audience.tag_named(name, now, create=True)
                assert tag is not None
                wanted.append(tag.id)
            if replace_tags:
                member.tags = {tag_id: member.tags.get(tag_id, now) for tag_id in wanted}
            else:
                for tag_id in wanted:
                    member.tags.setdefault(tag_id, now)
        if member.consent_snapshot() != before:
            self._touch(member)
        audience.index(member)
        self._changed(audience, member, seen)
        return member

    def _check_new_address(self, audience: Audience, member: Member, new_email: str, allow_archived: bool) -> None:
        """An address change: a real address, not forgotten, not another member's, and only for subscribers."""
        if not email_is_real(new_email, self.fake_domains):
            raise fake_email(new_email)
        new_hash = subscriber_hash(new_email)
        if new_hash in audience.forgotten:
            raise forgotten_email(new_email)
        other = audience.members.get(new_hash)
        if other is not None:
            shown = other.status_before_archive if other.status == "archived" else other.status
            message = f'"{new_email}" is already in this list with a status of "{shown}".'
            raise invalid_resource(errors=[{"field": "email_address", "message": message}])
        current = member.status_before_archive if allow_archived and member.status == "archived" else member.status
        if current != "subscribed" and not allow_archived:
            raise invalid_resource(
                f'This member\'s status is "{current}." You can only update email addresses '
                'for members with a status of "subscribed."'
            )

    @staticmethod
    def _apply_fields(audience: Audience, member: Member, parsed: MemberInput) -> None:
        for interest_id, chosen in (parsed.interests or {}).items():
            if chosen:
                member.interests.add(interest_id)
            else:
                member.interests.discard(interest_id)
        for name in ("vip", "language", "email_type", "ip_signup", "ip_opt"):
            value = getattr(parsed, name)
            if value is not None:
                setattr(member, name, value)
        if parsed.timestamp_signup is not None:
            member.timestamp_signup = parsed.timestamp_signup
        if parsed.timestamp_opt is not None:
            member.timestamp_opt = parsed.timestamp_opt
        if parsed.location:
            member.location.update(parsed.location)
        if parsed.marketing_permissions:
            member.marketing_permissions.update(parsed.marketing_permissions)

    def _enter_status(
        self, audience: Audience, member: Member, prior: str | None, status: str, parsed: MemberInput, now: int
    ) -> None:
        """What entering a status through the API brings with it: opt-in time, unsubscribe reason and time,
        who withdrew consent, a confirmation email."""
        if status == "subscribed":
            member.unsubscribe_reason = ""
            member.withdrawn_by = None
            if parsed.timestamp_opt is None and prior != "subscribed":
                member.timestamp_opt = now
            audience.last_sub_date = now
        elif status == "cleaned":
            member.withdrawn_by = "bounce"
        elif status == "unsubscribed":
            if prior != "unsubscribed":
                member.unsubscribe_reason = ADMIN_UNSUBSCRIBE_REASON
                member.unsubscribed_at = now
                member.withdrawn_by = _withdrawal(member.withdrawn_by, "api")
                audience.last_unsub_date = now
        elif status == "pending":
            member.unsubscribe_reason = ""
            if member.timestamp_signup is None:
                member.timestamp_signup = now
            if prior != "pending":
                self.confirmations.append(
                    {
                        "list_id": audience.id,
                        "email_address": member.email_address,
                        "subscriber_hash": member.hash,
                        "sent_at": now,
                    }
                )


def _withdrawal(current: str | None, by: str) -> str:
    """Who withdrew consent: the person's own unsubscribe or a bounce stays on record over a later admin's."""
    return current if current in ("person", "bounce") and by not in ("person", "bounce") else by


def _batch_error(email: str, refusal: ApiError) -> dict[str, str]:
    """One entry of batch subscribe's errors[]: merge-field refusals name the field, like the real service."""
    entry = {
        "email_address": email,
        "error": refusal.detail,
        "error_code": "ERROR_CONTACT_EXISTS" if refusal.title == "ERROR_CONTACT_EXISTS" else "ERROR_GENERIC",
        "field": "",
        "field_message": "",
    }
    if refusal.errors and refusal.detail == "Your merge fields were invalid.":
        entry["field"] = refusal.errors[0]["field"]
        entry["field_message"] = refusal.errors[0]["message"]
    elif refusal.errors:
        entry["error"] = refusal.errors[0]["message"]
    return entry
