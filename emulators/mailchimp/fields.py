"""Partial responses: ``fields`` and ``exclude_fields`` with dot notation, checked against the response shape.

A shape is a dict of field name to ``None`` (a leaf), another shape (an object, or an array of objects
whose items have that shape) or ``ANY`` (a free-form object such as ``merge_fields``, whose keys are the
audience's own). A name the shape does not have is refused, as the real API refuses it.
"""

from __future__ import annotations

from typing import Any

from .problems import bad_request

ANY = "any"
Shape = dict[str, Any]

LINKS: Shape = {"rel": None, "href": None, "method": None, "targetSchema": None, "schema": None}

MEMBER: Shape = {
    "id": None,
    "email_address": None,
    "unique_email_id": None,
    "contact_id": None,
    "full_name": None,
    "web_id": None,
    "email_type": None,
    "status": None,
    "unsubscribe_reason": None,
    "consents_to_one_to_one_messaging": None,
    "sms_phone_number": None,
    "sms_subscription_status": None,
    "sms_subscription_last_updated": None,
    "merge_fields": ANY,
    "interests": ANY,
    "stats": {"avg_open_rate": None, "avg_click_rate": None, "ecommerce_data": ANY},
    "ip_signup": None,
    "timestamp_signup": None,
    "ip_opt": None,
    "timestamp_opt": None,
    "member_rating": None,
    "last_changed": None,
    "language": None,
    "vip": None,
    "email_client": None,
    "location": {
        "latitude": None,
        "longitude": None,
        "gmtoff": None,
        "dstoff": None,
        "country_code": None,
        "timezone": None,
        "region": None,
    },
    "marketing_permissions": ANY,
    "last_note": ANY,
    "source": None,
    "tags_count": None,
    "tags": {"id": None, "name": None},
    "list_id": None,
    "_links": LINKS,
}
MEMBER_LIST: Shape = {"members": MEMBER, "list_id": None, "total_items": None, "_links": LINKS}
SEGMENT_MEMBER_LIST: Shape = {"members": MEMBER, "total_items": None, "_links": LINKS}

_LIST_STATS = dict.fromkeys(
    (
        "member_count",
        "total_contacts",
        "unsubscribe_count",
        "cleaned_count",
        "member_count_since_send",
        "unsubscribe_count_since_send",
        "cleaned_count_since_send",
        "campaign_count",
        "campaign_last_sent",
        "merge_field_count",
        "avg_sub_rate",
        "avg_unsub_rate",
        "target_sub_rate",
        "open_rate",
        "click_rate",
        "last_sub_date",
        "last_unsub_date",
    )
)
AUDIENCE: Shape = {
    "id": None,
    "web_id": None,
    "name": None,
    "contact": ANY,
    "permission_reminder": None,
    "use_archive_bar": None,
    "campaign_defaults": ANY,
    "notify_on_subscribe": None,
    "notify_on_unsubscribe": None,
    "date_created": None,
    "list_rating": None,
    "email_type_option": None,
    "subscribe_url_short": None,
    "subscribe_url_long": None,
    "beamer_address": None,
    "visibility": None,
    "double_optin": None,
    "has_welcome": None,
    "marketing_permissions": None,
    "modules": None,
    "stats": _LIST_STATS,
    "_links": LINKS,
}
AUDIENCE_LIST: Shape = {"lists": AUDIENCE, "total_items": None, "constraints": ANY, "_links": LINKS}

CATEGORY: Shape = {"list_id": None, "id": None, "title": None, "display_order": None, "type": None, "_links": LINKS}
CATEGORY_LIST: Shape = {"list_id": None, "categories": CATEGORY, "total_items": None, "_links": LINKS}
INTEREST: Shape = {
    "category_id": None,
    "list_id": None,
    "id": None,
    "name": None,
    "subscriber_count": None,
    "display_order": None,
    "_links": LINKS,
}
INTEREST_LIST: Shape = {
    "interests": INTEREST,
    "list_id": None,
    "category_id": None,
    "total_items": None,
    "_links": LINKS,
}


# Shapes of the other collections are only checked at their top level; their items accept any name.
def loose(collection: str, *extra: str) -> Shape:
    return {collection: ANY, "total_items": None, "_links": LINKS, **dict.fromkeys(extra)}


def _walk(path: str, shape: Shape) -> bool:
    node: Any = shape
    for part in path.split("."):
        if node == ANY:
            return True
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _tree(paths: list[str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if child is True:
                break
            node = child
        else:
            node[parts[-1]] = True
    return tree


def _include(value: Any, tree: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_include(item, tree) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        key: (value[key] if sub is True else _include(value[key], sub)) for key, sub in tree.items() if key in value
    }


def _exclude(value: Any, tree: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_exclude(item, tree) for item in value]
    if not isinstance(value, dict):
        return value
    kept = {}
    for key, item in value.items():
        sub = tree.get(key)
        if sub is True:
            continue
        kept[key] = item if sub is None else _exclude(item, sub)
    return kept


class Projection:
    """The parsed ``fields`` / ``exclude_fields`` of one request, validated against a shape."""

    def __init__(self, fields: str | None, exclude_fields: str | None, shape: Shape) -> None:
        if fields and exclude_fields:
            raise bad_request("The fields and exclude_fields parameters are mutually exclusive; send only one.")
        raw = fields or exclude_fields or ""
        paths = [p.strip() for p in raw.split(",") if p.strip()]
        for path in paths:
            if not _walk(path, shape):
                parameter = "fields" if fields else "exclude_fields"
                raise bad_request(f"The field '{path}' in {parameter} is not a valid field of this resource.")
        self.include = _tree(paths) if fields else None
        self.exclude = _tree(paths) if exclude_fields else None

    def wants(self, top_level: str) -> bool:
        """False when the response would drop this top-level field anyway (lets callers skip work)."""
        if self.include is not None:
            return top_level in self.include
        return not (self.exclude is not None and self.exclude.get(top_level) is True)

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.include is not None:
            return _include(body, self.include)
        if self.exclude is not None:
            return _exclude(body, self.exclude)
        return body
