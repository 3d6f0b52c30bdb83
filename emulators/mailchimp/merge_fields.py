"""Merge fields: the audience's definitions (``/lists/{list_id}/merge-fields``) and the values a member may hold.

Values are checked per type, as the service checks them, in single member writes and in batch subscribe (where
each refusal is a per-member error naming the field). A refusal is 400 "Invalid Resource" with the detail "Your
merge fields were invalid." and ``errors[]`` of ``{field: TAG, message}``. The messages "Please enter a value"
(a required field left empty), "Please enter the date" (date), "Please enter a month (01-12) and a day (01-31)"
(birthday) and "Please enter a complete address" are the service's own, as observed in real responses; the
messages for numbers, phone numbers, text longer than the field's size, web addresses and choices are this
emulator's wording for checks the service makes.

Stored values: numbers as numbers, dates in the field's ``date_format`` (the service takes ``YYYY-MM-DD`` too),
birthdays as MM/DD or DD/MM, addresses as an object of addr1, addr2, city, state, zip, country.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from emulators.common import Request, Response

from . import fields as shapes
from .audience import Audience, MergeField
from .problems import invalid_resource, missing_fields, not_found

if TYPE_CHECKING:
    from .emulator import MailchimpEmulator

TYPES = ("text", "number", "address", "phone", "date", "url", "imageurl", "radio", "dropdown", "birthday", "zip")
TEXT_SIZE = 255
MAX_MERGE_FIELDS = 30  # besides EMAIL; more are refused, as the service refuses them
INVALID = "Your merge fields were invalid."
ADDRESS_KEYS = ("addr1", "addr2", "city", "state", "zip", "country")
ADDRESS_REQUIRED = ("addr1", "city", "state", "zip")
DATE_FORMATS = ("MM/DD/YYYY", "DD/MM/YYYY")
BIRTHDAY_FORMATS = ("MM/DD", "DD/MM")


def default_options(kind: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options a merge field of this type has, with the service's defaults."""
    given = dict(given or {})
    if kind == "text":
        return {"size": int(given.get("size") or TEXT_SIZE)}
    if kind == "date":
        return {"date_format": given.get("date_format") or "MM/DD/YYYY"}
    if kind == "birthday":
        return {"date_format": given.get("date_format") or "MM/DD"}
    if kind == "phone":
        return {"phone_format": given.get("phone_format") or "none"}
    if kind == "address":
        return {"default_country": int(given.get("default_country") or 164)}
    if kind in ("radio", "dropdown"):
        return {"choices": [str(c) for c in given.get("choices") or []]}
    return {}


def _date(text: str, date_format: str) -> tuple[int, int, int] | None:
    iso = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", text)
    if iso:
        year, month, day = int(iso[1]), int(iso[2]), int(iso[3])
    else:
        parts = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", text)
        if not parts:
            return None
        first, second, year = int(parts[1]), int(parts[2]), int(parts[3])
        month, day = (second, first) if date_format == "DD/MM/YYYY" else (first, second)
    return (year, month, day) if _valid_day(month, day, year) else None


def _valid_day(month: int, day: int, year: int = 2000) -> bool:
    if not 1 <= month <= 12 or day < 1:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return day <= days[month - 1]


def check_value(definition: MergeField, value: Any) -> tuple[Any, str | None]:
    """The value to store, or the message the service refuses it with."""
    kind = definition.type
    options = definition.options or default_options(kind)
    if kind == "address":
        if value in ("", None):
            return "", None
        if not isinstance(value, dict):
            return None, "Please enter a complete address"
        parts = {k: str(value.get(k) or "").strip() for k in ADDRESS_KEYS}
        if any(not parts[k] for k in ADDRESS_REQUIRED):
            return None, "Please enter a complete address"
        return parts, None
    if isinstance(value, dict):
        return None, "Please enter a valid value"
    if value is None or (isinstance(value, str) and not value.strip()):
        return "", None
    text = str(value).strip()
    if kind == "number":
        if isinstance(value, bool):
            return None, "Please enter a number"
        if isinstance(value, (int, float)):
            return value, None
        try:
            number = float(text)
        except ValueError:
            return None, "Please enter a number"
        return (int(number) if number.is_integer() else number), None
    if kind == "date":
        date_format = str(options.get("date_format") or "MM/DD/YYYY")
        found = _date(text, date_format)
        if found is None:
            return None, "Please enter the date"
        year, month, day = found
        if date_format == "DD/MM/YYYY":
            return f"{day:02d}/{month:02d}/{year:04d}", None
        return f"{month:02d}/{day:02d}/{year:04d}", None
    if kind == "birthday":
        date_format = str(options.get("date_format") or "MM/DD")
        parts = re.fullmatch(r"(\d{1,2})/(\d{1,2})", text)
        if not parts:
            return None, "Please enter a month (01-12) and a day (01-31)"
        first, second = int(parts[1]), int(parts[2])
        month, day = (second, first) if date_format == "DD/MM" else (first, second)
        if not _valid_day(month, day):
            return None, "Please enter a month (01-12) and a day (01-31)"
        return (f"{day:02d}/{month:02d}" if date_format == "DD/MM" else f"{month:02d}/{day:02d}"), None
    if kind == "phone":
        digits = re.sub(r"\D", "", text)
        if options.get("phone_format") == "US" and len(digits) != 10:
            return None, "Please enter a valid US phone number in the format (###) ###-####"
        if not digits:
            return None, "Please enter a valid phone number"
    if kind in ("url", "imageurl") and not re.match(r"^(https?://)?[^\s/]+\.[^\s]+$", text):
        return None, "Please enter a valid URL"
    if kind == "zip" and not re.fullmatch(r"\d{5}(-\d{4})?", text):
        return None, "Please enter a valid US zip code"
    if kind in ("radio", "dropdown") and text not in (options.get("choices") or []):
        return None, "Please choose one of the listed values"
    size = int(options.get("size") or TEXT_SIZE) if kind == "text" else TEXT_SIZE
    if len(text) > size:
        return None, f"Please enter a value of at most {size} characters"
    return text, None


def check_merge_fields(
    audience: Audience, merge: dict[str, Any] | None, current: dict[str, Any], creating: bool, skip_validation: bool
) -> dict[str, Any]:
    """The merge values to store (unknown tags are dropped), or Invalid Resource naming each bad field."""
    accepted: dict[str, Any] = {}
    errors: list[dict[str, str]] = []
    for tag, value in (merge or {}).items():
        definition = audience.merge_field(tag)
        if definition is None:
            continue  # the service ignores merge tags the audience does not have
        stored, refusal = check_value(definition, value)
        if refusal is not None and not (skip_validation and definition.type == "address" and isinstance(value, dict)):
            errors.append({"field": tag, "message": refusal})
            continue
        accepted[tag] = stored if refusal is None else {k: str(v) for k, v in value.items()}
    if not skip_validation:
        combined = {**current, **accepted}
        for definition in audience.merge_fields:
            if not definition.required:
                continue
            value = combined.get(definition.tag, "")
            if (creating or definition.tag in accepted) and value in ("", None):
                errors.append({"field": definition.tag, "message": "Please enter a value"})
    if errors:
        raise invalid_resource(INVALID, errors)
    return accepted


# ---- the definitions' routes ----------------------------------------------------------------------
def register(emulator: MailchimpEmulator) -> None:
    routes = MergeFieldRoutes(emulator)
    base = "/3.0/lists/{list_id}/merge-fields"
    emulator.router.add("GET", base, routes.list)
    emulator.router.add("POST", base, routes.create)
    emulator.router.add("GET", base + "/{merge_id}", routes.get)
    emulator.router.add("PATCH", base + "/{merge_id}", routes.update)
    emulator.router.add("DELETE", base + "/{merge_id}", routes.delete)


def render(emulator: MailchimpEmulator, request: Request, audience: Audience, merge: MergeField) -> dict[str, Any]:
    path = f"/lists/{audience.id}/merge-fields/{merge.merge_id}"
    return {
        "merge_id": merge.merge_id,
        "tag": merge.tag,
        "name": merge.name,
        "type": merge.type,
        "required": merge.required,
        "default_value": merge.default_value,
        "public": merge.public,
        "display_order": merge.merge_id + 1,
        "options": merge.options or default_options(merge.type),
        "help_text": merge.help_text,
        "list_id": audience.id,
        "_links": emulator._links(request, path, "self", "parent", "update", "delete"),
    }


class MergeFieldRoutes:
    def __init__(self, emulator: MailchimpEmulator) -> None:
        self.emulator = emulator

    def _merge(self, audience: Audience, request: Request) -> MergeField:
        wanted = request.params.get("merge_id", "")
        for merge in audience.merge_fields:
            if str(merge.merge_id) == wanted:
                return merge
        raise not_found()

    def list(self, request: Request) -> Response:
        emulator = self.emulator
        with emulator.lock:
            audience = emulator._audience(request)
            wanted = request.arg("type")
            required = request.arg("required")
            items = [
                render(emulator, request, audience, m)
                for m in audience.merge_fields
                if (not wanted or m.type == wanted) and (required is None or m.required == (required.lower() == "true"))
            ]
        return emulator._page(
            request,
            items,
            shapes.loose("merge_fields", "list_id"),
            "merge_fields",
            f"/lists/{audience.id}/merge-fields",
            {"list_id": audience.id},
        )

    def get(self, request: Request) -> Response:
        emulator = self.emulator
        with emulator.lock:
            audience = emulator._audience(request)
            return emulator._ok(render(emulator, request, audience, self._merge(audience, request)))

    def create(self, request: Request) -> Response:
        emulator = self.emulator
        body = emulator._body(request)
        with emulator.lock:
            audience = emulator._audience(request)
            spec = _validated(body, creating=True)
            if len(audience.merge_fields) >= MAX_MERGE_FIELDS:
                raise invalid_resource(f"You have reached the limit of {MAX_MERGE_FIELDS} merge fields for this list.")
            tag = str(spec.get("tag") or "").strip().upper() or f"MMERGE{len(audience.merge_fields) + 1}"
            if not re.fullmatch(r"[A-Z0-9_]{1,10}", tag):
                raise invalid_resource(
                    "The resource submitted could not be validated.",
                    [{"field": "tag", "message": "Merge tags are up to 10 of A-Z, 0-9 and _."}],
                )
            if tag == "EMAIL" or audience.merge_field(tag) is not None:
                raise invalid_resource(f'A Merge Field with the tag "{tag}" already exists for this list.')
            merge = MergeField(
                max((m.merge_id for m in audience.merge_fields), default=0) + 1,
                tag,
                str(spec["name"]).strip(),
                str(spec["type"]),
                bool(spec.get("required", False)),
                str(spec.get("default_value") or ""),
                options=default_options(str(spec["type"]), spec.get("options")),
                public=bool(spec.get("public", True)),
                help_text=str(spec.get("help_text") or ""),
            )
            audience.merge_fields.append(merge)
            return emulator._ok(render(emulator, request, audience, merge))

    def update(self, request: Request) -> Response:
        emulator = self.emulator
        body = emulator._body(request)
        with emulator.lock:
            audience = emulator._audience(request)
            merge = self._merge(audience, request)
            spec = _validated(body, creating=False)
            if "type" in spec and spec["type"] != merge.type:
                raise invalid_resource(
                    "The resource submitted could not be validated.",
                    [{"field": "type", "message": "The type of a merge field cannot be changed."}],
                )
            merge.name = str(spec.get("name", merge.name)).strip()
            merge.required = bool(spec.get("required", merge.required))
            merge.default_value = str(spec.get("default_value", merge.default_value) or "")
            merge.public = bool(spec.get("public", merge.public))
            if "options" in spec:
                merge.options = default_options(merge.type, {**(merge.options or {}), **(spec["options"] or {})})
            return emulator._ok(render(emulator, request, audience, merge))

    def delete(self, request: Request) -> Response:
        emulator = self.emulator
        with emulator.lock:
            audience = emulator._audience(request)
            merge = self._merge(audience, request)
            audience.merge_fields.remove(merge)
            for member in audience.members.values():
                member.merge_fields.pop(merge.tag, None)
        return emulator._no_content()


def _validated(body: Any, *, creating: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid_resource(
            "The resource submitted could not be validated.",
            [{"field": "", "message": "Schema describes object, something else found instead"}],
        )
    if creating:
        missing = [name for name in ("name", "type") if not body.get(name)]
        if missing:
            raise missing_fields(*missing)
    kind = body.get("type")
    if kind is not None and kind not in TYPES:
        raise invalid_resource(
            "The resource submitted could not be validated.",
            [{"field": "type", "message": f"Value must be one of: {', '.join(TYPES)}"}],
        )
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise invalid_resource(
            "The resource submitted could not be validated.",
            [{"field": "options", "message": "Schema describes object, something else found instead"}],
        )
    date_format = (options or {}).get("date_format")
    if date_format is not None:
        allowed = BIRTHDAY_FORMATS if kind == "birthday" else DATE_FORMATS
        if kind in ("date", "birthday") and date_format not in allowed:
            raise invalid_resource(
                "The resource submitted could not be validated.",
                [{"field": "options.date_format", "message": f"Value must be one of: {', '.join(allowed)}"}],
            )
    return body
