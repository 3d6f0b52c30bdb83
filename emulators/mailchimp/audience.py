"""An audience (list) and its members, with the indexes that keep a page read cheap at 100,000 members.

Every member sits in two lists sorted by (last_changed, change_seq, hash): one of all members that are
not archived (what ``GET .../members`` shows without a status filter) and one per status. A page sorted
by last_changed is a bisect plus a slice, ``total_items`` is a subtraction, and the status counts in
the audience stats are list lengths.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .timestamps import format_epoch

MEMBER_STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")
WRITABLE_STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
PATCH_STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending")
CATEGORY_TYPES = ("checkboxes", "dropdown", "radio", "hidden")
MAX_MEMBER_TAGS_SHOWN = 50

_HASH = re.compile(r"^[0-9a-f]{32}$")


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


def looks_like_hash(value: str) -> bool:
    return bool(_HASH.match(value))


def short_id(*parts: object) -> str:
    """A stable 10-hex id like Mailchimp's list, category and interest ids."""
    return hashlib.md5(":".join(map(str, parts)).encode()).hexdigest()[:10]


def long_id(*parts: object) -> str:
    """A stable 32-hex id like Mailchimp's contact_id."""
    return hashlib.md5(":".join(map(str, parts)).encode()).hexdigest()


class Member:
    """One person in one audience. ``interests`` holds the ids set to true; ``tags`` maps tag id to date added."""

    __slots__ = (
        "change_seq",
        "contact_id",
        "email_address",
        "email_type",
        "hash",
        "interests",
        "ip_opt",
        "ip_signup",
        "language",
        "last_changed",
        "list_id",
        "location",
        "marketing_permissions",
        "member_rating",
        "merge_fields",
        "sms_phone_number",
        "sms_subscription_last_updated",
        "sms_subscription_status",
        "source",
        "status",
        "status_before_archive",
        "tags",
        "timestamp_opt",
        "timestamp_signup",
        "unique_email_id",
        "unsubscribe_reason",
        "unsubscribed_at",
        "vip",
        "web_id",
        "withdrawn_by",
    )

    def __init__(
        self,
        list_id: str,
        email_address: str,
        status: str,
        *,
        contact_id: str,
        unique_email_id: str,
        web_id: int,
        now: int,
        source: str = "API - Generic",
    ) -> None:
        self.list_id = list_id
        self.email_address = email_address.strip()
        self.hash = subscriber_hash(email_address)
        self.status = status
        self.status_before_archive: str | None = None
        self.contact_id = contact_id
        self.unique_email_id = unique_email_id
        self.web_id = web_id
        self.unsubscribe_reason = ""
        self.merge_fields: dict[str, Any] = {}
        self.interests: set[str] = set()
        self.tags: dict[int, int] = {}
        self.last_changed = now
        self.change_seq = 0
        self.timestamp_opt: int | None = None
        self.timestamp_signup: int | None = None
        self.ip_signup = ""
        self.ip_opt = ""
        self.source = source
        self.vip = False
        self.language = ""
        self.email_type = "html"
        self.location: dict[str, float] = {"latitude": 0, "longitude": 0}
        self.member_rating = 2
        # who last withdrew consent: "person" (their own unsubscribe), "admin", "api" or "bounce" (cleaned); kept
        # through pending and archive until the person's own signup or confirmation, never shown by the API
        self.withdrawn_by: str | None = None
        self.unsubscribed_at: int | None = None
        self.marketing_permissions: dict[str, bool] = {}
        self.sms_phone_number = ""
        self.sms_subscription_status = ""
        self.sms_subscription_last_updated = ""

    @property
    def index_key(self) -> tuple[int, int, str]:
        return (self.last_changed, self.change_seq, self.hash)

    def consent_snapshot(self) -> tuple[Any, ...]:
        """Everything a write can change that counts as a change of the member's info (tags do not)."""
        return (
            self.email_address,
            self.status,
            self.unsubscribe_reason,
            tuple(sorted(self.merge_fields.items(), key=lambda kv: kv[0])),
            frozenset(self.interests),
            self.vip,
            self.language,
            self.email_type,
            self.timestamp_opt,
            self.timestamp_signup,
            self.ip_signup,
            self.ip_opt,
            self.location.get("latitude"),
            self.location.get("longitude"),
            tuple(sorted(self.marketing_permissions.items())),
        )


@dataclass
class MergeField:
    merge_id: int
    tag: str
    name: str
    type: str = "text"
    required: bool = False
    default_value: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # date_format, size, phone_format... (merge_fields.py)
    public: bool = True
    help_text: str = ""


@dataclass
class InterestCategory:
    id: str
    list_id: str
    title: str
    type: str
    display_order: int = 0


@dataclass
class Interest:
    id: str
    category_id: str
    list_id: str
    name: str
    display_order: int = 0


@dataclass
class Tag:
    id: int
    name: str
    created_at: int
    updated_at: int


@dataclass
class MarketingPermission:
    """A GDPR marketing permission of an audience (email, direct mail, customised online advertising...)."""

    id: str
    text: str


@dataclass
class Webhook:
    id: str
    list_id: str
    url: str
    events: dict[str, bool]
    sources: dict[str, bool]
    created_at: int
    signing_secret: str = ""  # empty: an unsigned webhook (created before signing existed)
    disabled: bool = False  # a delivery was answered 410


DEFAULT_MERGE_FIELDS = (
    ("FNAME", "First Name", "text"),
    ("LNAME", "Last Name", "text"),
    ("ADDRESS", "Address", "address"),
    ("PHONE", "Phone Number", "phone"),
    ("BIRTHDAY", "Birthday", "birthday"),
)


@dataclass
class Audience:
    id: str
    name: str
    web_id: int
    date_created: int
    double_optin: bool = False
    merge_fields: list[MergeField] = field(default_factory=list)
    members: dict[str, Member] = field(default_factory=dict)
    by_contact: dict[str, str] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)
    categories: dict[str, InterestCategory] = field(default_factory=dict)
    interests: dict[str, Interest] = field(default_factory=dict)
    tags: dict[int, Tag] = field(default_factory=dict)
    tag_ids_by_name: dict[str, int] = field(default_factory=dict)
    webhooks: dict[str, Webhook] = field(default_factory=dict)
    index_active: list[tuple[int, int, str]] = field(default_factory=list)
    index_by_status: dict[str, list[tuple[int, int, str]]] = field(
        default_factory=lambda: {status: [] for status in MEMBER_STATUSES}
    )
    last_sub_date: int | None = None
    last_unsub_date: int | None = None
    permissions: list[MarketingPermission] = field(default_factory=list)
    # segment (tag) ids are unique across the account, so the emulator hands them out
    new_tag_id: Callable[[], int] | None = None

    # ---- membership and indexes --------------------------------------------------------------
    def index(self, member: Member) -> None:
        key = member.index_key
        bisect.insort(self.index_by_status[member.status], key)
        if member.status != "archived":
            bisect.insort(self.index_active, key)

    def unindex(self, member: Member) -> None:
        key = member.index_key
        _remove(self.index_by_status[member.status], key)
        if member.status != "archived":
            _remove(self.index_active, key)

    def add(self, member: Member) -> None:
        self.members[member.hash] = member
        self.by_contact[member.contact_id] = member.hash
        self.index(member)

    def remove(self, member: Member) -> None:
        self.unindex(member)
        del self.members[member.hash]
        self.by_contact.pop(member.contact_id, None)

    def rebuild_indexes(self) -> None:
        """Sort once after a bulk seed instead of inserting 100,000 times."""
        self.index_by_status = {status: [] for status in MEMBER_STATUSES}
        active: list[tuple[int, int, str]] = []
        for member in self.members.values():
            key = member.index_key
            self.index_by_status[member.status].append(key)
            if member.status != "archived":
                active.append(key)
        for keys in self.index_by_status.values():
            keys.sort()
        active.sort()
        self.index_active = active

    def count(self, status: str) -> int:
        return len(self.index_by_status[status])

    # ---- merge fields, interests, tags -------------------------------------------------------
    def merge_field(self, tag: str) -> MergeField | None:
        for merge in self.merge_fields:
            if merge.tag == tag:
                return merge
        return None

    def interest_ids(self) -> list[str]:
        """Every interest of the audience, in category then display order (the keys of member.interests)."""
        categories = sorted(self.categories.values(), key=lambda c: (c.display_order, c.id))
        ordered: list[str] = []
        for category in categories:
            ordered += [
                i.id
                for i in sorted(self.interests.values(), key=lambda i: (i.display_order, i.id))
                if i.category_id == category.id
            ]
        return ordered

    def tag_named(self, name: str, now: int, create: bool) -> Tag | None:
        tag_id = self.tag_ids_by_name.get(name.strip().lower())
        if tag_id is not None:
            return self.tags[tag_id]
        if not create:
            return None
        if self.new_tag_id is not None:
            tag_id = self.new_tag_id()
        else:
            tag_id = 10_000 + len(self.tags) + 1
            while tag_id in self.tags:
                tag_id += 1
        tag = Tag(tag_id, name.strip(), now, now)
        self.tags[tag_id] = tag
        self.tag_ids_by_name[tag.name.lower()] = tag_id
        return tag

    def tag_member_count(self, tag_id: int) -> int:
        return sum(1 for m in self.members.values() if tag_id in m.tags and m.status != "archived")

    def stats(self) -> dict[str, Any]:
        subscribed = self.count("subscribed")
        return {
            "member_count": subscribed,
            "total_contacts": len(self.index_active),
            "unsubscribe_count": self.count("unsubscribed"),
            "cleaned_count": self.count("cleaned"),
            "member_count_since_send": subscribed,
            "unsubscribe_count_since_send": self.count("unsubscribed"),
            "cleaned_count_since_send": self.count("cleaned"),
            "campaign_count": 0,
            "campaign_last_sent": "",
            "merge_field_count": len(self.merge_fields),
            "avg_sub_rate": 0,
            "avg_unsub_rate": 0,
            "target_sub_rate": 0,
            "open_rate": 0,
            "click_rate": 0,
            "last_sub_date": format_epoch(self.last_sub_date),
            "last_unsub_date": format_epoch(self.last_unsub_date),
        }


def _remove(keys: list[tuple[int, int, str]], key: tuple[int, int, str]) -> None:
    at = bisect.bisect_left(keys, key)
    if at < len(keys) and keys[at] == key:
        del keys[at]
