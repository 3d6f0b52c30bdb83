"""Every app setting Consent Bridge reads, validated in one place.

A missing or malformed value becomes one line that names the setting and the expected form.
Secret values (the Mailchimp key, storage connection strings) are never echoed back.

Longer than 500 lines because every setting is read and validated here, in the one place the contract names,
including the JSON ones (SYNC_LINKS, FIELD_MAP) whose every key gets its own one-line error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from shared.errors import ConfigurationError

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
LINK_NAME = re.compile(r"^[a-z0-9-]{1,40}$")
AUDIENCE_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
API_KEY = re.compile(r"^[0-9A-Za-z]{8,64}-(?P<dc>[a-z]{2,4}[0-9]{1,3})$")
LOGICAL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")
PREFIX = re.compile(r"^[a-z][a-z0-9]{1,7}$")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

DEFAULTS = {
    "SYNC_SCHEDULE": "0 */15 * * * *",
    "SYNC_NOW_SCHEDULE": "0 * * * * *",
    "FULL_RESYNC_HOURS": "24",
    "RESUBSCRIBE_POLICY": "never",
    "NEW_MEMBER_STATUS": "subscribed",
    "OPT_OUT_COLUMNS": "donotbulkemail,donotsendmm",
    "DATAVERSE_PREFIX": "cbr",
    "SUBSCRIBER_STATUS_COLUMN": "cbr_subscriberstatus",
    "MAILCHIMP_MAX_CONNECTIONS": "8",
    "DATAVERSE_MAX_PARALLEL": "4",
    "BATCH_SIZE": "500",
    "CAMPAIGN_ACTIVITY_DAYS": "30",
    "RECONCILE_MAX_EMAILS": "5000",
    "ON_DYNAMICS_DELETE": "keep",
    "FIELD_MAP": '[{"column":"firstname","mergeField":"FNAME"},{"column":"lastname","mergeField":"LNAME"}]',
}
MERGE_TAG = re.compile(r"^[A-Z0-9_]{1,10}$")
FIELD_DIRECTIONS = ("to-mailchimp", "to-dynamics", "both")
RECORD_KINDS = ("contact", "lead", "account")


@dataclass(frozen=True)
class Problem:
    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


class SettingsError(ConfigurationError, ValueError):
    """One or more settings are missing or malformed; ``problems`` lists each, one line apiece."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = problems[0] if problems else Problem("settings", "invalid")
        super().__init__(first.setting, first.message)
        self.args = ("\n".join(str(p) for p in problems),)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Link:
    """One Dynamics marketing list paired with one Mailchimp audience."""

    name: str
    marketing_list_id: str
    audience_id: str
    tag: str | None = None


# Columns of the out-of-the-box tables, by kind: a mapping without ``kinds`` applies to the kinds that have its
# column. A column not listed here (a custom one) applies to every kind; `check` verifies it exists.
KNOWN_COLUMNS: dict[str, frozenset[str]] = {
    "contact": frozenset(
        {"firstname", "lastname", "middlename", "nickname", "jobtitle", "birthdate", "anniversary", "salutation"}
        | {"telephone1", "telephone2", "mobilephone", "websiteurl", "gendercode", "numberofchildren"}
        | {"address1_composite", "address2_composite", "department", "spousesname"}
    ),
    "lead": frozenset(
        {"firstname", "lastname", "middlename", "jobtitle", "companyname", "telephone1", "mobilephone"}
        | {"websiteurl", "address1_composite", "address2_composite", "salutation", "numberofemployees"}
    ),
    "account": frozenset(
        {"name", "telephone1", "telephone2", "websiteurl", "numberofemployees", "revenue", "accountnumber"}
        | {"address1_composite", "address2_composite", "tickersymbol"}
    ),
}
ALL_KNOWN: frozenset[str] = frozenset().union(*KNOWN_COLUMNS.values())


@dataclass(frozen=True)
class FieldMapping:
    """One Dataverse column and one Mailchimp merge field kept in step (FIELD_MAP)."""

    column: str
    merge_field: str
    direction: Literal["to-mailchimp", "to-dynamics", "both"] = "to-mailchimp"
    kinds: tuple[str, ...] | None = None  # None: the kinds that have the column

    @property
    def applies_to(self) -> tuple[str, ...]:
        """The record kinds the mapping applies to: its own ``kinds``, or those that have the column."""
        if self.kinds:
            return self.kinds
        if self.column in ALL_KNOWN:
            return tuple(k for k in RECORD_KINDS if self.column in KNOWN_COLUMNS[k])
        return RECORD_KINDS


DEFAULT_FIELD_MAP = (FieldMapping("firstname", "FNAME"), FieldMapping("lastname", "LNAME"))


@dataclass(frozen=True)
class StorageSettings:
    """Either a connection string (Azurite, or a key-based account) or identity-based service URIs."""

    connection_string: str | None = None
    queue_service_uri: str | None = None
    table_service_uri: str | None = None
    blob_service_uri: str | None = None
    client_id: str | None = None

    def __repr__(self) -> str:  # the connection string may carry an account key
        kind = "connection string" if self.connection_string else f"identity ({self.queue_service_uri})"
        return f"StorageSettings({kind})"


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings
    mailchimp_api_key: str
    mailchimp_base_url: str
    dataverse_url: str
    azure_client_id: str | None
    links: tuple[Link, ...]
    sync_schedule: str
    full_resync_hours: float
    resubscribe_policy: Literal["never", "confirm"]
    new_member_status: Literal["subscribed", "pending"]
    opt_out_columns: tuple[str, ...]
    dataverse_prefix: str
    subscriber_status_column: str | None
    mailchimp_max_connections: int
    batch_size: int
    campaign_activity_days: int = 30
    reconcile_max_emails: int = 5000
    sync_now_schedule: str = "0 * * * * *"  # the timer that answers "Sync now" in Dynamics
    on_dynamics_delete: Literal["keep", "archive", "forget"] = "keep"
    public_base_url: str | None = None  # the app's public root: webhook URLs are built from it; None: no real time
    webhook_secret: str | None = field(default=None, repr=False)  # the webhook routes' shared secret
    field_map: tuple[FieldMapping, ...] = DEFAULT_FIELD_MAP
    dataverse_max_parallel: int = 4  # writes in flight per instance: the service's x-ms-dop-hint, at most this
    opt_out_rollup: Literal["all", "any"] = "all"  # how per-audience statuses roll up into OPT_OUT_COLUMNS

    def __repr__(self) -> str:  # never show the key
        return (
            f"Settings(links={[link.name for link in self.links]}, dataverse_url={self.dataverse_url!r}, "
            f"mailchimp_base_url={self.mailchimp_base_url!r}, storage={self.storage!r})"
        )

    def link(self, name: str) -> Link:
        for link in self.links:
            if link.name == name:
                return link
        known = ", ".join(link.name for link in self.links) or "none"
        raise SettingsError([Problem("SYNC_LINKS", f"no link named {name!r} (configured: {known})")])

    @property
    def dataverse_is_emulator(self) -> bool:
        return is_loopback_http(self.dataverse_url)


def is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_HOSTS


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[Problem] = []

    def raw(self, name: str, required: bool = False) -> str | None:
        value = self.env.get(name)
        if value is None or not value.strip():
            if required:
                self.problems.append(Problem(name, "is required but not set"))
            return DEFAULTS.get(name)
        return value.strip()

    def fail(self, name: str, message: str) -> None:
        self.problems.append(Problem(name, message))

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.raw(name) or allowed[0]
        if value not in allowed:
            self.fail(name, f"expected one of {', '.join(allowed)}; got {value!r}")
        return value

    def integer(self, name: str, low: int, high: int) -> int:
        text = self.raw(name) or "0"
        try:
            value = int(text)
        except ValueError:
            self.fail(name, f"expected a whole number from {low} to {high}; got {text!r}")
            return low
        if not low <= value <= high:
            self.fail(name, f"expected a whole number from {low} to {high}; got {value}")
        return value


def load_settings(env: Mapping[str, str]) -> Settings:
    """Reads and validates every setting; raises SettingsError listing every problem found."""
    read = _Reader(env)
    storage = _storage(read)
    api_key = _api_key(read)
    base_url = _mailchimp_base_url(read, api_key)
    dataverse_url = _dataverse_url(read)
    client_id = read.raw("AZURE_CLIENT_ID")
    if client_id and not GUID.match(client_id):
        read.fail("AZURE_CLIENT_ID", "expected the managed identity's client id, a GUID")
    links = _links(read)
    schedule = read.raw("SYNC_SCHEDULE") or DEFAULTS["SYNC_SCHEDULE"]
    if len(schedule.split()) != 6 or not re.fullmatch(r"[0-9*/,\-A-Za-z ]+", schedule):
        read.fail(
            "SYNC_SCHEDULE", f"expected an NCRONTAB expression with six fields, e.g. '0 */15 * * * *'; got {schedule!r}"
        )
    sync_now_schedule = read.raw("SYNC_NOW_SCHEDULE") or DEFAULTS["SYNC_NOW_SCHEDULE"]
    if len(sync_now_schedule.split()) != 6 or not re.fullmatch(r"[0-9*/,\-A-Za-z ]+", sync_now_schedule):
        read.fail(
            "SYNC_NOW_SCHEDULE",
            f"expected an NCRONTAB expression with six fields, e.g. '0 * * * * *'; got {sync_now_schedule!r}",
        )
    hours_text = read.raw("FULL_RESYNC_HOURS") or "24"
    try:
        hours = float(hours_text)
        if hours <= 0:
            raise ValueError
    except ValueError:
        read.fail("FULL_RESYNC_HOURS", f"expected a positive number of hours, e.g. 24; got {hours_text!r}")
        hours = 24.0
    policy = read.choice("RESUBSCRIBE_POLICY", ("never", "confirm"))
    new_status = read.choice("NEW_MEMBER_STATUS", ("subscribed", "pending"))
    columns = tuple(c.strip() for c in (read.raw("OPT_OUT_COLUMNS") or "").split(",") if c.strip())
    if not columns or not all(LOGICAL_NAME.match(c) for c in columns):
        read.fail(
            "OPT_OUT_COLUMNS",
            "expected a comma-separated list of Dataverse boolean column logical names, "
            "e.g. 'donotbulkemail,donotsendmm'",
        )
    prefix = read.raw("DATAVERSE_PREFIX") or "cbr"
    if not PREFIX.match(prefix):
        read.fail(
            "DATAVERSE_PREFIX", f"expected 2 to 8 lower-case letters or digits starting with a letter; got {prefix!r}"
        )
    status_column = env.get("SUBSCRIBER_STATUS_COLUMN", DEFAULTS["SUBSCRIBER_STATUS_COLUMN"]).strip() or None
    if status_column and not LOGICAL_NAME.match(status_column):
        read.fail(
            "SUBSCRIBER_STATUS_COLUMN",
            f"expected a column logical name such as 'cbr_subscriberstatus', "
            f"or empty to disable; got {status_column!r}",
        )
    max_connections = read.integer("MAILCHIMP_MAX_CONNECTIONS", 1, 10)
    max_parallel = read.integer("DATAVERSE_MAX_PARALLEL", 1, 52)
    batch_size = read.integer("BATCH_SIZE", 1, 1000)
    campaign_days = read.integer("CAMPAIGN_ACTIVITY_DAYS", 1, 180)
    reconcile_max_emails = read.integer("RECONCILE_MAX_EMAILS", 1, 20000)
    on_delete = read.choice("ON_DYNAMICS_DELETE", ("keep", "archive", "forget"))
    rollup = read.choice("OPT_OUT_ROLLUP", ("all", "any"))
    public_base_url, webhook_secret = _real_time(read)
    field_map = _field_map(read)
    if read.problems:
        raise SettingsError(read.problems)
    return Settings(
        storage=storage,
        mailchimp_api_key=api_key or "",
        mailchimp_base_url=base_url or "",
        dataverse_url=dataverse_url or "",
        azure_client_id=client_id,
        links=links,
        sync_schedule=schedule,
        full_resync_hours=hours,
        resubscribe_policy="confirm" if policy == "confirm" else "never",
        new_member_status="pending" if new_status == "pending" else "subscribed",
        opt_out_columns=columns,
        dataverse_prefix=prefix,
        subscriber_status_column=status_column,
        mailchimp_max_connections=max_connections,
        dataverse_max_parallel=max_parallel,
        batch_size=batch_size,
        campaign_activity_days=campaign_days,
        reconcile_max_emails=reconcile_max_emails,
        sync_now_schedule=sync_now_schedule,
        on_dynamics_delete="archive" if on_delete == "archive" else "forget" if on_delete == "forget" else "keep",
        public_base_url=public_base_url,
        webhook_secret=webhook_secret,
        field_map=field_map,
        opt_out_rollup="any" if rollup == "any" else "all",
    )


WEBHOOK_SECRET_MIN = 32


def _real_time(read: _Reader) -> tuple[str | None, str | None]:
    """PUBLIC_BASE_URL and WEBHOOK_SECRET: the URL needs the secret; the secret alone still guards the routes."""
    url = read.raw("PUBLIC_BASE_URL")
    secret = read.raw("WEBHOOK_SECRET")
    if url:
        url = url.rstrip("/")
        if not _is_root_url(url):
            read.fail(
                "PUBLIC_BASE_URL",
                f"expected the function app's root, e.g. https://contoso-cbr.azurewebsites.net "
                f"(or http://127.0.0.1:<port> for serve); got {url!r}",
            )
        if not secret:
            read.fail("WEBHOOK_SECRET", "is required when PUBLIC_BASE_URL is set: 32 or more random characters")
    if secret is not None:
        if secret.startswith("@Microsoft.KeyVault("):
            read.fail(
                "WEBHOOK_SECRET",
                "the Key Vault reference was not resolved: check the app's identity has 'Key Vault Secrets User' "
                "and the secret exists",
            )
        elif len(secret) < WEBHOOK_SECRET_MIN or not re.fullmatch(r"[A-Za-z0-9._~-]+", secret):
            read.fail(
                "WEBHOOK_SECRET",
                f"expected {WEBHOOK_SECRET_MIN} or more of the letters, digits and . _ ~ - (it travels in a URL); "
                "value not shown",
            )
    return url, secret


def _storage(read: _Reader) -> StorageSettings:
    connection = read.raw("AzureWebJobsStorage")
    if connection:
        if connection == "UseDevelopmentStorage=true":
            return StorageSettings(connection_string=connection)
        fields = dict(part.split("=", 1) for part in connection.split(";") if "=" in part)
        if "AccountName" not in fields and "QueueEndpoint" not in fields:
            read.fail(
                "AzureWebJobsStorage",
                "expected a storage connection string "
                "(AccountName=...;AccountKey=... or UseDevelopmentStorage=true); "
                "value not shown",
            )
        return StorageSettings(connection_string=connection)
    account = read.raw("AzureWebJobsStorage__accountName")
    queue_uri = read.raw("AzureWebJobsStorage__queueServiceUri")
    table_uri = read.raw("AzureWebJobsStorage__tableServiceUri")
    if account:
        queue_uri = queue_uri or f"https://{account}.queue.core.windows.net"
        table_uri = table_uri or f"https://{account}.table.core.windows.net"
    if not (queue_uri and table_uri):
        read.fail(
            "AzureWebJobsStorage",
            "is required: a connection string, or identity-based "
            "AzureWebJobsStorage__accountName (or __queueServiceUri and "
            "__tableServiceUri)",
        )
        return StorageSettings()
    return StorageSettings(
        queue_service_uri=queue_uri,
        table_service_uri=table_uri,
        blob_service_uri=read.raw("AzureWebJobsStorage__blobServiceUri"),
        client_id=read.raw("AzureWebJobsStorage__clientId"),
    )


def _api_key(read: _Reader) -> str | None:
    key = read.raw("MAILCHIMP_API_KEY", required=True)
    if key is None:
        return None
    if key.startswith("@Microsoft.KeyVault("):
        read.fail(
            "MAILCHIMP_API_KEY",
            "the Key Vault reference was not resolved: check the app's identity has "
            "'Key Vault Secrets User' and the secret exists",
        )
    elif not API_KEY.match(key):
        read.fail(
            "MAILCHIMP_API_KEY", "expected '<key>-<data center>' as Mailchimp shows it, e.g. '…-us21' (value not shown)"
        )
    return key


def _mailchimp_base_url(read: _Reader, api_key: str | None) -> str | None:
    url = read.raw("MAILCHIMP_BASE_URL")
    if not url:
        found = API_KEY.match(api_key or "")
        return f"https://{found['dc']}.api.mailchimp.com/3.0" if found else None
    url = url.rstrip("/")
    parts = urlsplit(url)
    if not (parts.scheme == "https" or is_loopback_http(url)) or not parts.hostname:
        read.fail(
            "MAILCHIMP_BASE_URL",
            f"expected an https URL ending in /3.0, or http://127.0.0.1:<port>/3.0 for the local emulator; got {url!r}",
        )
    elif "server" in url:
        read.fail(
            "MAILCHIMP_BASE_URL",
            "must not contain the text 'server': the pinned Mailchimp client rewrites it in every URL",
        )
    return url


def _is_root_url(url: str) -> bool:
    """An https root (no path), or a plain http one on loopback (an emulator, serve)."""
    parts = urlsplit(url)
    return bool(parts.hostname) and parts.path in ("", "/") and (parts.scheme == "https" or is_loopback_http(url))


def _dataverse_url(read: _Reader) -> str | None:
    url = read.raw("DATAVERSE_URL", required=True)
    if url is None:
        return None
    url = url.rstrip("/")
    if not _is_root_url(url):
        read.fail(
            "DATAVERSE_URL",
            f"expected the environment URL, e.g. https://contoso.crm4.dynamics.com "
            f"(or http://127.0.0.1:<port> for the local emulator); got {url!r}",
        )
    return url


def _objects(
    read: _Reader, setting: str, text: str, form: str, keys: tuple[str, ...], *, empty_ok: bool = False
) -> list[tuple[str, dict[str, object]]]:
    """A setting holding a JSON array of objects: (where, object) for each object; a problem per malformed part."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        read.fail(setting, f"is not valid JSON ({exc.msg} at character {exc.pos}); {form}")
        return []
    if not isinstance(items, list) or not (items or empty_ok):
        read.fail(setting, f"{form}; got {type(items).__name__ if items or empty_ok else 'an empty array'}")
        return []
    found: list[tuple[str, dict[str, object]]] = []
    for index, item in enumerate(items):
        where = f"{setting}[{index}]"
        if not isinstance(item, dict):
            read.fail(where, f"expected an object; {form}")
            continue
        unknown = set(item) - set(keys)
        if unknown:
            read.fail(where, f"unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(keys)}")
        found.append((where, item))
    return found


def _links(read: _Reader) -> tuple[Link, ...]:
    text = read.raw("SYNC_LINKS", required=True)
    if text is None:
        return ()
    form = (
        'expected a JSON array like [{"name": "newsletter", "marketingListId": "<guid>", '
        '"audienceId": "<id>", "tag": "optional"}]'
    )
    links: list[Link] = []
    for where, item in _objects(read, "SYNC_LINKS", text, form, ("name", "marketingListId", "audienceId", "tag")):
        name, list_id, audience, tag = (item.get(k) for k in ("name", "marketingListId", "audienceId", "tag"))
        if not isinstance(name, str) or not LINK_NAME.match(name):
            read.fail(f"{where}.name", f"expected 1 to 40 of a-z, 0-9 and '-'; got {name!r}")
        elif any(link.name == name for link in links):
            read.fail(f"{where}.name", f"{name!r} is used by more than one link; names must be unique")
        if not isinstance(list_id, str) or not GUID.match(list_id):
            read.fail(f"{where}.marketingListId", f"expected the marketing list's id, a GUID; got {list_id!r}")
        if not isinstance(audience, str) or not AUDIENCE_ID.match(audience):
            read.fail(
                f"{where}.audienceId", f"expected the Mailchimp audience (list) id, e.g. 'a1b2c3d4e5'; got {audience!r}"
            )
        if tag is not None and (not isinstance(tag, str) or not tag.strip() or len(tag) > 100):
            read.fail(f"{where}.tag", "expected a tag name of 1 to 100 characters, or no tag key")
        tag_name = tag.strip() if isinstance(tag, str) else None
        links.append(Link(str(name), str(list_id).lower(), str(audience), tag_name))
    return tuple(links)


def _field_map(read: _Reader) -> tuple[FieldMapping, ...]:
    text = read.raw("FIELD_MAP") or "[]"
    form = (
        'expected a JSON array like [{"column": "firstname", "mergeField": "FNAME", "direction": "to-mailchimp", '
        '"kinds": ["contact", "lead"]}] (direction and kinds optional), or [] for no mapped fields'
    )
    mappings: list[FieldMapping] = []
    keys = ("column", "mergeField", "direction", "kinds")
    for where, item in _objects(read, "FIELD_MAP", text, form, keys, empty_ok=True):
        column, tag = item.get("column"), item.get("mergeField")
        direction = item.get("direction", "to-mailchimp")
        kinds = item.get("kinds")
        if not isinstance(column, str) or not LOGICAL_NAME.match(column):
            read.fail(
                f"{where}.column", f"expected a Dataverse column logical name such as 'firstname'; got {column!r}"
            )
        if not isinstance(tag, str) or not MERGE_TAG.match(tag):
            read.fail(
                f"{where}.mergeField",
                f"expected a merge tag of 1 to 10 of A-Z, 0-9 and '_' such as 'FNAME'; got {tag!r}",
            )
        if direction not in FIELD_DIRECTIONS:
            read.fail(f"{where}.direction", f"expected one of {', '.join(FIELD_DIRECTIONS)}; got {direction!r}")
        if kinds is not None and (
            not isinstance(kinds, list)
            or not kinds
            or not all(k in RECORD_KINDS for k in kinds)
            or len(set(kinds)) != len(kinds)
        ):
            read.fail(f"{where}.kinds", f"expected a non-empty subset of {list(RECORD_KINDS)}; got {kinds!r}")
            kinds = None
        mapping = FieldMapping(
            str(column),
            str(tag),
            "both" if direction == "both" else "to-dynamics" if direction == "to-dynamics" else "to-mailchimp",
            tuple(kinds) if kinds else None,
        )
        for other in mappings:
            if other.merge_field != mapping.merge_field:
                continue
            shared_kinds = set(other.applies_to) & set(mapping.applies_to)
            if shared_kinds:
                read.fail(
                    f"{where}.mergeField",
                    f"{mapping.merge_field} is mapped twice for {', '.join(sorted(shared_kinds))}; "
                    "give each mapping of one merge field its own kinds",
                )
                break
        mappings.append(mapping)
    return tuple(mappings)
