"""The product's one door to the Dataverse (Dynamics 365) Web API v9.2.

A thin adapter over ``requests`` that keeps the service's quirks in this module, so the sync engine
never sees HTTP:

- ``DATAVERSE_URL`` is an ``https://`` environment URL (tokens from azure-identity for scope
  ``<url>/.default``, cached until five minutes before expiry and never logged) or a plain
  ``http://127.0.0.1:<port>`` emulator on loopback (no token); anything else is refused;
- every request carries ``OData-MaxVersion``/``OData-Version: 4.0`` and ``Accept: application/json``,
  GETs carry ``If-None-Match: null`` as Microsoft recommends, bodies are JSON;
- 429 and 503 are retried after ``Retry-After`` (seconds, honoured exactly plus a little jitter);
  502, 504 and network errors after a jittered exponential backoff (a POST whose answer timed out is
  not repeated: it may have been applied); a 401 refreshes the token once;
  a throttled request that never gets through raises ``Throttled``;
- paging follows ``@odata.nextLink`` with ``Prefer: odata.maxpagesize`` (at most 5,000) and keeps
  the change-tracking ``@odata.deltaLink``; delta pages surface deleted rows as ``DeletedRecord``;
  an expired delta token raises ``DeltaTokenExpiredError`` (read everything again);
- FetchXML paging sets ``count``/``page`` and feeds back the twice URL-encoded paging cookie; a
  FetchXML URL longer than the 32 KB GET limit goes inside ``$batch`` (64 KB);
- ``$batch`` framing (parts, change sets, ``Content-ID``), batches of at most 1,000 requests, and
  the multipart answer parsed back into one ``BatchResult`` per operation; operations tied by
  ``travels_with`` go as one change set each, several in a request, never split between requests;
  parts answered 429/503 are sent again after ``Retry-After`` (outside atomic batches);
- errors become ``DataverseError`` (``status``, ``code``, ``message``) whose text never carries an
  email address: addresses are replaced by their member hash;
- the bulk messages ``UpdateMultiple``/``CreateMultiple`` (whether a table supports them is asked once per
  table and message from ``sdkmessagefilters``), the service's ``x-ms-dop-hint`` (``dop_hint``), and a cap on
  concurrent writes, ``write_slot()``: the hint bounded by ``DATAVERSE_MAX_PARALLEL``; a ``Retry-After`` holds
  back every request of the client until it has passed, not just the one that was throttled.

Longer than 500 lines because it is the one door to the Web API: transport, paging, $batch framing and
its multipart answers are each other's callers, and the quirks stay readable side by side.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

import requests
from azure.core.credentials import AccessToken, TokenCredential

from shared.errors import ConfigurationError
from shared.model.kinds import BY_LIST_CODE
from shared.rules.addresses import redact_emails
from shared.settings import LOOPBACK_HOSTS

log = logging.getLogger(__name__)

API_PATH = "/api/data/v9.2"
MAX_PAGE_SIZE = 5000
BATCH_LIMIT = 1000
GET_URL_LIMIT = 32_768
THROTTLED_STATUSES = frozenset({429, 503})
TRANSIENT_STATUSES = frozenset({502, 504})
BACKOFF_CAP_SECONDS = 60.0
TOKEN_REFRESH_MARGIN_SECONDS = 300
EXPIRED_DELTA_CODE = "0x80044352"
# error.code of a write to a record that cannot be changed: read-only (e.g. a qualified lead) or inactive
READ_ONLY_CODES = frozenset({"0x8004022e", "0x80040230"})
FETCH_ANNOTATIONS = (
    'odata.include-annotations="Microsoft.Dynamics.CRM.fetchxmlpagingcookie,Microsoft.Dynamics.CRM.morerecords"'
)

_ENTITY_ID = re.compile(r"\(([0-9a-fA-F-]{36})\)\s*$")
_ROW_PATH = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*\((?P<id>[0-9a-fA-F-]{36})\)(\?.*)?$")


def redact(text: str) -> str:
    """``text`` with every email address replaced by ``<member {hash}>``."""
    return redact_emails(text, "<member {}>")


def dataverse_refusal(refused: BatchResult | DataverseError) -> str:
    """Why Dataverse refused a write, as the audit records it, from the answer's error code and status:
    "read-only-record" (the record is read-only or inactive), "record-deleted" (404: no such record any more),
    otherwise "dataverse-refused-<status>"."""
    if isinstance(refused, DataverseError):
        status, code = refused.status, refused.code
    else:
        status, code = refused.status, _error_fields(refused.body, refused.status)[0]
    if code.lower() in READ_ONLY_CODES:
        return "read-only-record"
    if status == 404:
        return "record-deleted"
    return f"dataverse-refused-{status}"


class DataverseError(Exception):
    """A request Dataverse refused (or that never reached it: ``status`` 0)."""

    def __init__(self, status: int, code: str, message: str, *, method: str = "", path: str = "") -> None:
        self.status = status
        self.code = code
        self.message = redact(message)
        self.method = method
        self.path = redact(path)
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.method} {self.path} " if self.method else ""
        code = f" {self.code}" if self.code else ""
        todo = f"; {self.todo}" if self.todo else ""
        return " ".join(f"Dataverse {where}answered {self.status}{code}: {self.message}{todo}".split())

    @property
    def refused(self) -> bool:
        """Dataverse said no for a reason a retry does not change (a privilege, a missing table or column)."""
        return 400 <= self.status < 500 and self.status not in (408, 429)

    @property
    def todo(self) -> str:
        """What to grant or fix, from the status and the call."""
        return refusal_todo(self.status, self.method, self.path)

    @property
    def refusal(self) -> str:
        """Why Dataverse refused the write (see dataverse_refusal)."""
        return dataverse_refusal(self)


# calls that change the environment's customizations: the role a person runs `provision` with needs them
_CUSTOMIZATION = frozenset(
    {
        "EntityDefinitions",
        "RelationshipDefinitions",
        "PublishXml",
        "PublishAllXml",
        "savedqueries",
        "publishers",
        "solutions",
    }
)
_PRIVILEGE = {"GET": "Read", "POST": "Create", "PATCH": "Write", "PUT": "Write", "DELETE": "Delete"}


def refusal_todo(status: int, method: str, path: str) -> str:
    """What to grant or fix when Dataverse refuses ``method path`` with ``status`` ("" when nothing applies)."""
    rest = path.split(API_PATH, 1)[-1].lstrip("/")
    resource = re.split(r"[(/?]", rest, maxsplit=1)[0] or "the service root"
    keyed = rest[len(resource) :].startswith("(")
    if status == 401:
        return (
            "register the identity (the app's AZURE_CLIENT_ID, or your own login for the command line) as an "
            "application user of this environment with the Consent Bridge role (docs/deploy.md, step 4b)"
        )
    if status == 403:
        if resource in _CUSTOMIZATION:
            return "run provision as a System Administrator or System Customizer of the environment"
        if resource == "$batch" or "$ref" in rest or resource == "AddListMembersList":
            privilege = "Write, Append and Append To"
        else:
            privilege = _PRIVILEGE.get(method, "Read")
        return (
            f"grant the Consent Bridge security role {privilege} at Organization level on {resource} "
            "(Dataverse names the missing privilege above; docs/deploy.md, step 4a)"
        )
    if status == 404 and resource in _CUSTOMIZATION:
        return (
            "what it names is not in this environment: check that DATAVERSE_URL is the environment's URL and that "
            "whoever runs provision is a System Administrator or System Customizer there"
        )
    if status == 404 and keyed:
        return f"there is no such row in {resource}: check the id (SYNC_LINKS marketingListId for a marketing list)"
    if status == 404:
        return (
            f"{resource} does not exist in this environment: check DATAVERSE_URL, and run "
            "`python -m shared.cli provision` for the product's own tables"
        )
    if status == 400:
        return (
            "the environment lacks a column or table the request names: check OPT_OUT_COLUMNS, "
            "SUBSCRIBER_STATUS_COLUMN and FIELD_MAP, and run `python -m shared.cli provision`"
        )
    return ""


class Throttled(DataverseError):  # noqa: N818 - the name the sync engine codes against
    """Service protection (429) still refused the request after every retry."""


class DeltaTokenExpiredError(DataverseError):
    """The change-tracking token is older than the organisation keeps changes: read everything again."""


@dataclass(frozen=True)
class DeletedRecord:
    """A row a delta link reports as deleted."""

    id: str
    reason: str = "deleted"


@dataclass
class BatchOperation:
    """One request of a ``$batch``; ``url_path`` is relative to the API root (``contacts(<id>)``) or a
    ``$<content-id>`` reference to an earlier operation of the same change set. ``travels_with`` names the row (a
    record's id, or any key) whose write the operation belongs with: it goes in one change set with the operations
    writing that row and the others naming the same key, so they succeed or fail together (``batch_units``)."""

    method: str
    url_path: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    content_id: str | None = None
    travels_with: str | None = None


@dataclass
class BatchResult:
    """The answer to one BatchOperation. Status 424 means it was not run because an earlier request
    failed and ``continue_on_error`` was off."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    content_id: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def entity_id(self) -> str | None:
        """The id of the record a create or upsert wrote."""
        found = _ENTITY_ID.search(self.headers.get("OData-EntityId", ""))
        return found.group(1).lower() if found else None

    @property
    def refusal(self) -> str:
        """Why Dataverse refused this operation (see dataverse_refusal)."""
        return dataverse_refusal(self)

    def error(self, operation: BatchOperation | None = None) -> DataverseError | None:
        if self.ok:
            return None
        code, message = _error_fields(self.body, self.status)
        return DataverseError(
            self.status,
            code,
            message,
            method=operation.method if operation else "",
            path=operation.url_path if operation else "",
        )


class DataverseSettings(Protocol):
    @property
    def dataverse_url(self) -> str: ...

    @property
    def azure_client_id(self) -> str | None: ...


class _TokenSource:
    """Bearer tokens for one scope, cached until shortly before they expire."""

    def __init__(self, credential: TokenCredential, scope: str) -> None:
        self.credential = credential
        self.scope = scope
        self._token: AccessToken | None = None
        self._lock = threading.Lock()

    def header(self, force: bool = False) -> str:
        with self._lock:
            if force or self._token is None or self._token.expires_on - time.time() < TOKEN_REFRESH_MARGIN_SECONDS:
                self._token = self.credential.get_token(self.scope)
            return f"Bearer {self._token.token}"


def environment_url(url: str) -> str:
    """The environment root of ``DATAVERSE_URL``, or ConfigurationError naming the setting."""
    parts = urlsplit((url or "").strip())
    host = parts.hostname or ""
    # what was given, without any user name or password it may carry
    given = repr(f"{parts.scheme}://{host}{parts.path}" if parts.scheme or host else (url or "").strip())
    if not ((parts.scheme == "https" and host) or (parts.scheme == "http" and host in LOOPBACK_HOSTS)):
        raise ConfigurationError(
            "DATAVERSE_URL",
            f"must be the environment's https URL (or http://127.0.0.1:<port> for the local emulator); got {given}",
            "set it like https://contoso.crm4.dynamics.com",
        )
    path = parts.path.rstrip("/")
    if path.lower().endswith(API_PATH):
        path = path[: -len(API_PATH)]
    if path:
        raise ConfigurationError(
            "DATAVERSE_URL", f"must be the environment root without a path; got {given}", "remove the path"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _error_fields(body: Any, status: int) -> tuple[str, str]:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return str(error.get("code") or ""), str(error.get("message") or "")
    if isinstance(body, str) and body.strip():
        return "", body.strip()[:300]
    try:
        return "", HTTPStatus(status).phrase
    except ValueError:
        return "", "no message"


def _query(params: dict[str, str]) -> str:
    return "&".join(f"{name}={quote(value, safe=chr(39) + '(),')}" for name, value in params.items())


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


class Dataverse:
    """A Dataverse Web API client for one environment."""

    def __init__(
        self,
        url: str,
        *,
        credential: TokenCredential | None = None,
        client_id: str | None = None,
        max_attempts: int = 6,
        timeout: float = 120,
        page_size: int = MAX_PAGE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        max_parallel: int = 1,
    ) -> None:
        self.org_url = environment_url(url)
        self.api = self.org_url + API_PATH
        self.max_attempts = max(1, max_attempts)
        self.timeout = timeout
        self.page_size = min(max(1, page_size), MAX_PAGE_SIZE)
        self.last_delta_link: str | None = None
        self._sleep = sleep
        self.on_throttle: Callable[[float], None] | None = None  # set by the engine (set_throttle_observer)
        self.last_server_time: datetime | None = None
        self._token: _TokenSource | None = None
        if credential is None and self.org_url.startswith("https://"):
            # imported here: azure.identity is slow to load and an emulator on loopback never needs it
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential(managed_identity_client_id=client_id)
        if credential is not None:
            self._token = _TokenSource(credential, f"{self.org_url}/.default")
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"})
        self.max_parallel = max(1, max_parallel)
        self.dop_hint: int | None = None  # the service's x-ms-dop-hint, from the latest answer that had one
        self._paused_until = 0.0  # time.monotonic() before which no request is sent (a Retry-After)
        self._writes = threading.Condition()
        self._writes_in_flight = 0
        self._supported: dict[str, frozenset[str]] = {}  # message -> the tables that take it
        self._known: Callable[[], Mapping[str, frozenset[str]]] | None = None  # answers kept by earlier processes
        self._learned: Callable[[str, frozenset[str]], None] | None = None
        self.chunk_sizes: dict[str, int] = {}  # records per bulk message, per table, once the service said less

    @classmethod
    def from_settings(cls, settings: DataverseSettings) -> Dataverse:
        return cls(
            settings.dataverse_url,
            client_id=settings.azure_client_id,
            max_parallel=getattr(settings, "dataverse_max_parallel", 1),
        )

    def set_throttle_observer(self, observer: Callable[[float], None] | None) -> None:
        """``observer(wait_seconds)`` is called each time service protection throttles a request, before the retry."""
        self.on_throttle = observer

    # ---- transport ---------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.api}/{path.lstrip('/')}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        multipart_errors: bool = False,
    ) -> requests.Response:
        url = self._url(path)
        if params:
            url += ("&" if "?" in url else "?") + _query(params)
        where = urlsplit(url).path
        refreshed, force_refresh = False, False
        attempt = 0
        while True:
            attempt += 1
            self._hold()
            request_headers = dict(headers or {})
            if method == "GET":
                request_headers.setdefault("If-None-Match", "null")
            if body is not None:
                request_headers.setdefault("Content-Type", "application/json")
                data = json.dumps(body).encode()
            if self._token is not None:
                request_headers["Authorization"] = self._token.header(force=force_refresh)
                force_refresh = False
            try:
                response = self.session.request(method, url, data=data, headers=request_headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                # a POST that timed out while waiting for the answer may have been applied: not sent twice
                unsure = method == "POST" and isinstance(exc, requests.ReadTimeout)
                if attempt >= self.max_attempts or unsure:
                    raise DataverseError(
                        0,
                        "",
                        f"could not reach DATAVERSE_URL {self.org_url} ({exc.__class__.__name__})",
                        method=method,
                        path=where,
                    ) from exc
                self._wait(None, attempt, method, where, exc.__class__.__name__)
                continue
            status = response.status_code
            with contextlib.suppress(KeyError, TypeError, ValueError):  # the service's clock: watermarks use it
                self.last_server_time = parsedate_to_datetime(response.headers["Date"])
            with contextlib.suppress(KeyError, ValueError):
                self.dop_hint = max(1, int(response.headers["x-ms-dop-hint"]))
            multipart = response.headers.get("Content-Type", "").startswith("multipart/mixed")
            if status == 401 and self._token is not None and not refreshed:
                refreshed = force_refresh = True
                continue
            retryable = status in THROTTLED_STATUSES or status in TRANSIENT_STATUSES
            if retryable and not multipart and attempt < self.max_attempts:
                self._wait(_retry_after(response), attempt, method, where, str(status))
                continue
            if status >= 400 and not (multipart_errors and multipart):
                raise self._error(response, method, where)
            return response

    def _hold(self) -> None:
        """Waits out a Retry-After another request of this client was given."""
        wait = self._paused_until - time.monotonic()
        if wait > 0:
            self._sleep(wait)

    def _wait(self, retry_after: float | None, attempt: int, method: str, where: str, reason: str) -> None:
        if retry_after is not None:
            delay = retry_after + random.uniform(0, min(1.0, retry_after * 0.2))
            self._paused_until = max(self._paused_until, time.monotonic() + retry_after)
        else:
            delay = min(BACKOFF_CAP_SECONDS, 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        log.warning(
            "dataverse %s %s: %s, retrying in %.2fs (attempt %d of %d)",
            method,
            redact(where),
            reason,
            delay,
            attempt + 1,
            self.max_attempts,
        )
        if self.on_throttle is not None and (reason == "429" or "throttled" in reason):
            self.on_throttle(delay)
        self._sleep(delay)

    @staticmethod
    def _error(response: requests.Response, method: str, where: str) -> DataverseError:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        code, message = _error_fields(body, response.status_code)
        kind = DataverseError
        if response.status_code == 429:
            kind = Throttled
        elif code.lower() == EXPIRED_DELTA_CODE:
            kind = DeltaTokenExpiredError
        return kind(response.status_code, code, message, method=method, path=where)

    @staticmethod
    def _json(response: requests.Response) -> dict[str, Any]:
        return response.json() if response.content else {}

    # ---- reads ---------------------------------------------------------------------------------------
    def get(
        self, path: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return self._json(self._request("GET", path, params=params, headers=headers))

    def iter_pages(
        self,
        path: str,
        *,
        select: Sequence[str] | str | None = None,
        filter: str | None = None,  # noqa: A002
        orderby: str | None = None,
        page_size: int | None = None,
        track_changes: bool = False,
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of a collection, following ``@odata.nextLink``; afterwards ``last_delta_link`` holds the
        ``@odata.deltaLink`` of a change-tracking read (None otherwise)."""
        params: dict[str, str] = {}
        if select:
            params["$select"] = select if isinstance(select, str) else ",".join(select)
        if filter:
            params["$filter"] = filter
        if orderby:
            params["$orderby"] = orderby
        size = min(page_size or self.page_size, MAX_PAGE_SIZE)
        prefer = f"odata.maxpagesize={size}" + (",odata.track-changes" if track_changes else "")
        self.last_delta_link = None
        url: str | None = path
        first = True
        while url:
            body = self.get(url, params if first else None, {"Prefer": prefer})
            first = False
            yield body.get("value", [])
            url = body.get("@odata.nextLink")
            if not url:
                self.last_delta_link = body.get("@odata.deltaLink")

    def iter_delta(self, delta_link: str) -> Iterator[list[dict[str, Any] | DeletedRecord]]:
        """The changes since a delta link: changed rows as dicts, deleted rows as ``DeletedRecord``.
        Afterwards ``last_delta_link`` holds the link to keep for next time."""
        self.last_delta_link = None
        url: str | None = delta_link
        while url:
            body = self.get(url, headers={"Prefer": f"odata.maxpagesize={self.page_size}"})
            rows: list[dict[str, Any] | DeletedRecord] = []
            for item in body.get("value", []):
                if str(item.get("@odata.context", "")).endswith("/$deletedEntity"):
                    rows.append(DeletedRecord(str(item["id"]).lower(), str(item.get("reason", "deleted"))))
                else:
                    rows.append(item)
            yield rows
            url = body.get("@odata.nextLink")
            if not url:
                self.last_delta_link = body.get("@odata.deltaLink")

    def iter_fetchxml(
        self, entity_set: str, fetch_xml: str, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of a FetchXML query (null columns are absent from FetchXML rows)."""
        root = ElementTree.fromstring(fetch_xml)  # noqa: S314 - FetchXML the product built or Dataverse stores
        paged = root.get("top") is None
        page, cookie = 1, None
        if paged:
            root.set("count", str(min(page_size, MAX_PAGE_SIZE)))
        while True:
            if paged:
                root.set("page", str(page))
                if cookie is not None:
                    root.set("paging-cookie", cookie)
            body = self._fetch_page(entity_set, ElementTree.tostring(root, encoding="unicode"))
            yield body.get("value", [])
            if not paged or not body.get("@Microsoft.Dynamics.CRM.morerecords"):
                return
            outer = body.get("@Microsoft.Dynamics.CRM.fetchxmlpagingcookie")
            page += 1
            cookie = None
            if outer:
                element = ElementTree.fromstring(outer)  # noqa: S314 - the service's own cookie
                page = int(element.get("pagenumber") or page)
                cookie = unquote(unquote(element.get("pagingcookie") or "")) or None

    def _fetch_page(self, entity_set: str, fetch_xml: str) -> dict[str, Any]:
        query = _query({"fetchXml": fetch_xml})
        if len(f"{self.api}/{entity_set}?{query}") <= GET_URL_LIMIT:
            return self.get(f"{entity_set}?{query}", headers={"Prefer": FETCH_ANNOTATIONS})
        result = self.batch(
            [BatchOperation("GET", f"{entity_set}?{query}", headers={"Prefer": FETCH_ANNOTATIONS})],
            continue_on_error=False,
        )[0]
        failure = result.error(BatchOperation("GET", entity_set))
        if failure is not None:
            raise failure
        return result.body or {}

    # ---- writes ---------------------------------------------------------------------------------------
    def create(self, entity_set: str, body: dict[str, Any], *, solution: str | None = None) -> str:
        """Creates a record and returns its id; ``solution`` puts a solution component (a view) in that
        unmanaged solution."""
        headers = {"MSCRM.SolutionUniqueName": solution} if solution else None
        response = self._request("POST", entity_set, body=body, headers=headers)
        found = _ENTITY_ID.search(response.headers.get("OData-EntityId", ""))
        if found is None:
            raise DataverseError(
                response.status_code, "", "the create answer has no OData-EntityId", method="POST", path=entity_set
            )
        return found.group(1).lower()

    def update(self, entity_set: str, id: str, changes: dict[str, Any], *, if_match: str | None = "*") -> None:  # noqa: A002
        """PATCHes a record; ``if_match="*"`` (the default) never creates one, None allows an upsert, an etag
        makes the write conditional (412 when the record changed)."""
        headers = {"If-Match": if_match} if if_match is not None else {}
        self._request("PATCH", f"{entity_set}({id})", body=changes, headers=headers)

    def delete(self, entity_set: str, id: str, *, if_match: str | None = None) -> None:  # noqa: A002
        headers = {"If-Match": if_match} if if_match is not None else {}
        self._request("DELETE", f"{entity_set}({id})", headers=headers)

    # ---- $batch ----------------------------------------------------------------------------------------
    def batch(
        self, operations: Sequence[BatchOperation], *, atomic: bool = False, continue_on_error: bool = True
    ) -> list[BatchResult]:
        """Runs the operations in ``$batch`` requests of at most 1,000 and returns one result each, in order.
        ``atomic`` puts them in one change set (all or nothing; at most 1,000, no GET). Otherwise each group of
        operations tied by ``travels_with`` is a change set of its own, never split between two requests; with
        ``continue_on_error`` a failed change set leaves the others and the loose requests to run."""
        units = [list(range(len(operations)))] if atomic else batch_units(operations)
        for unit in units:
            if len(unit) > BATCH_LIMIT:
                raise ValueError(f"a change set holds at most {BATCH_LIMIT} operations, got {len(unit)}")
            if (atomic or len(unit) > 1) and any(operations[i].method.upper() == "GET" for i in unit):
                raise ValueError("GET requests cannot be part of a change set")
        results: list[BatchResult | None] = [None] * len(operations)
        for request in pack(units):
            sent = [index for unit in request for index in unit]
            position = {index: n for n, index in enumerate(sent)}
            parts = [[position[i] for i in unit] for unit in request]
            answers = self._batch_request([operations[i] for i in sent], parts, atomic, continue_on_error)
            for index, answer in zip(sent, answers, strict=True):
                results[index] = answer
        return [r for r in results if r is not None]  # every operation is in one request

    def _batch_request(
        self, operations: list[BatchOperation], units: list[list[int]], atomic: bool, continue_on_error: bool
    ) -> list[BatchResult]:
        """One ``$batch`` request of these units (each an operation or a change set); parts the service throttled
        are sent again after ``Retry-After`` (a throttled change set as a whole: it was rolled back)."""
        results: list[BatchResult | None] = [None] * len(operations)
        pending = units
        for attempt in range(1, self.max_attempts + 1):
            answers = self._send_batch(operations, pending, atomic, continue_on_error)
            throttled: list[list[int]] = []
            waits: list[float] = []
            for unit in pending:
                for index in unit:
                    results[index] = answers[index]
                statuses = [answers[index] for index in unit if answers[index].status in THROTTLED_STATUSES]
                if statuses and not atomic:
                    throttled.append(unit)
                    waits.append(float(statuses[0].headers.get("Retry-After") or 1))
            if not throttled or attempt == self.max_attempts:
                break
            parts = sum(map(len, throttled))
            self._wait(max(waits), attempt, "POST", f"{API_PATH}/$batch", f"{parts} parts throttled")
            pending = throttled
        return [r if r is not None else BatchResult(424, None) for r in results]

    def _send_batch(
        self, operations: list[BatchOperation], units: list[list[int]], atomic: bool, continue_on_error: bool
    ) -> dict[int, BatchResult]:
        boundary = f"batch_{uuid.uuid4()}"
        payload = ""
        for unit in units:
            parts = [self._batch_part(operations[i], atomic) for i in unit]
            if atomic or len(unit) > 1:
                changeset = f"changeset_{uuid.uuid4()}"
                inner = "".join(f"--{changeset}\r\n{part}\r\n" for part in parts) + f"--{changeset}--\r\n"
                payload += f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n{inner}"
            else:
                payload += f"--{boundary}\r\n{parts[0]}\r\n"
        payload += f"--{boundary}--\r\n"
        headers = {"Content-Type": f"multipart/mixed; boundary={boundary}"}
        if continue_on_error:
            headers["Prefer"] = "odata.continue-on-error"
        response = self._request("POST", "$batch", data=payload.encode(), headers=headers, multipart_errors=True)
        answers = _parse_multipart(response.content, response.headers.get("Content-Type", ""))
        return _match_answers(operations, units, answers)

    def _batch_part(self, operation: BatchOperation, atomic: bool) -> str:
        lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
        if operation.content_id is not None:
            lines.append(f"Content-ID: {operation.content_id}")
        target = (
            operation.url_path if operation.url_path.startswith("$") else f"{API_PATH}/{operation.url_path.lstrip('/')}"
        )
        lines += ["", f"{operation.method.upper()} {target} HTTP/1.1"]
        headers = dict(operation.headers or {})
        if operation.body is not None:
            headers.setdefault("Content-Type", "application/json; type=entry")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        body = json.dumps(operation.body) if operation.body is not None else ""
        return "\r\n".join(lines) + "\r\n\r\n" + body

    # ---- marketing lists ---------------------------------------------------------------------------------
    def associate(self, list_id: str, nav: str, member_set: str, member_id: str) -> None:
        """Adds one member to a static list through its N:N navigation property (e.g. listcontact_association)."""
        reference = {"@odata.id": f"{self.api}/{member_set}({member_id})"}
        self._request("POST", f"lists({list_id})/{nav}/$ref", body=reference)

    def disassociate(self, list_id: str, nav: str, member_id: str) -> None:
        self._request("DELETE", f"lists({list_id})/{nav}({member_id})/$ref")

    def add_list_members(self, list_id: str, member_type_code: int, ids: Sequence[str]) -> None:
        """Adds members (of the list's type: 1 account, 2 contact, 4 lead) in AddListMembersList calls of 1,000."""
        kind = BY_LIST_CODE.get(member_type_code)
        if kind is None:
            raise ValueError(f"member type code must be 1 (account), 2 (contact) or 4 (lead), got {member_type_code}")
        for start in range(0, len(ids), BATCH_LIMIT):
            members = [
                {"@odata.type": f"Microsoft.Dynamics.CRM.{kind.name}", kind.id_attribute: member_id}
                for member_id in ids[start : start + BATCH_LIMIT]
            ]
            self._request(
                "POST",
                "AddListMembersList",
                body={"List": {"@odata.type": "Microsoft.Dynamics.CRM.list", "listid": list_id}, "Members": members},
            )

    # ---- metadata ------------------------------------------------------------------------------------------
    def entity_definition(
        self,
        logical_name: str,
        select: Sequence[str] = ("LogicalName", "EntitySetName", "PrimaryIdAttribute", "ChangeTrackingEnabled"),
    ) -> dict[str, Any] | None:
        """The table's definition, or None when there is no such table."""
        return self._definition(f"EntityDefinitions(LogicalName='{logical_name}')", select)

    def attribute_definition(
        self,
        entity_logical_name: str,
        attribute_logical_name: str,
        select: Sequence[str] = ("LogicalName", "AttributeType"),
    ) -> dict[str, Any] | None:
        """A column's definition, or None when the table has no such column."""
        return self._definition(
            f"EntityDefinitions(LogicalName='{entity_logical_name}')/Attributes(LogicalName="
            f"'{attribute_logical_name}')",
            select,
        )

    def _definition(self, path: str, select: Sequence[str]) -> dict[str, Any] | None:
        try:
            return self.get(path, {"$select": ",".join(select)})
        except DataverseError as exc:
            if exc.status == 404:
                return None
            raise

    def create_attribute(
        self, entity_logical_name: str, attribute_metadata: dict[str, Any], *, solution: str | None = None
    ) -> None:
        headers = {"MSCRM.SolutionUniqueName": solution} if solution else None
        self._request(
            "POST",
            f"EntityDefinitions(LogicalName='{entity_logical_name}')/Attributes",
            body=attribute_metadata,
            headers=headers,
        )

    def create_entity(self, metadata: dict[str, Any], *, solution: str | None = None) -> None:
        headers = {"MSCRM.SolutionUniqueName": solution} if solution else None
        self._request("POST", "EntityDefinitions", body=metadata, headers=headers)

    def relationship_definition(
        self,
        schema_name: str,
        select: Sequence[str] = ("SchemaName", "ReferencedEntity", "ReferencingEntity", "ReferencingAttribute"),
    ) -> dict[str, Any] | None:
        """A relationship's definition, or None when there is no relationship of that SchemaName."""
        return self._definition(f"RelationshipDefinitions(SchemaName='{schema_name}')", select)

    def create_relationship(self, metadata: dict[str, Any], *, solution: str | None = None) -> None:
        """Creates a relationship (a one-to-many one brings its lookup column with it)."""
        headers = {"MSCRM.SolutionUniqueName": solution} if solution else None
        self._request("POST", "RelationshipDefinitions", body=metadata, headers=headers)

    def publish(self, entity_logical_names: Sequence[str]) -> None:
        """Publishes the customizations (views, forms) of these tables only."""
        entities = "".join(f"<entity>{name}</entity>" for name in entity_logical_names)
        self._request(
            "POST",
            "PublishXml",
            body={"ParameterXml": f"<importexportxml><entities>{entities}</entities></importexportxml>"},
        )

    def publish_all(self) -> None:
        self._request("POST", "PublishAllXml")

    def whoami(self) -> dict[str, Any]:
        return self.get("WhoAmI")

    # ---- bulk messages ------------------------------------------------------------------------------------
    def remember_messages(
        self, known: Callable[[], Mapping[str, frozenset[str]]], learned: Callable[[str, frozenset[str]], None]
    ) -> None:
        """Where the answers of ``supports_message`` an earlier process found are (asked once, at the first
        question), and where to hand a new answer so that later processes find it: each run is a process of its
        own, and need not ask the service again."""
        self._known = known
        self._learned = learned

    def supports_message(self, logical_name: str, message: str) -> bool:
        """Whether the table supports a message such as ``UpdateMultiple``, from ``sdkmessagefilters`` (not every
        standard table does): one read per message lists every table that has it, and the answer is kept for the
        process (and handed to what ``remember_messages`` named, for later processes); an environment that cannot
        answer counts as no."""
        if self._known is not None:
            known, self._known = self._known, None
            self._supported.update(known())
        if message not in self._supported:
            tables: set[str] = set()
            pages = self.iter_pages(
                "sdkmessagefilters",
                select="primaryobjecttypecode",
                filter=f"sdkmessageid/name eq '{message}'",
                page_size=MAX_PAGE_SIZE,
            )
            try:
                for page in pages:
                    tables |= {str(row.get("primaryobjecttypecode")) for row in page}
            except DataverseError as exc:
                if exc.status not in (400, 403, 404, 501):
                    raise
                tables = set()
            self._supported[message] = frozenset(tables)
            if self._learned is not None:
                self._learned(message, self._supported[message])
        return logical_name in self._supported[message]

    def update_multiple(self, entity_set: str, logical_name: str, targets: Sequence[dict[str, Any]]) -> datetime | None:
        """One ``UpdateMultiple`` (all or nothing on standard tables); returns the service's time after it, which is
        no earlier than the ``modifiedon`` it gave the records."""
        body = {"Targets": [{**target, "@odata.type": f"Microsoft.Dynamics.CRM.{logical_name}"} for target in targets]}
        response = self._request("POST", f"{entity_set}/Microsoft.Dynamics.CRM.UpdateMultiple", body=body)
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return parsedate_to_datetime(response.headers["Date"])
        return None

    def create_multiple(self, entity_set: str, logical_name: str, targets: Sequence[dict[str, Any]]) -> list[str]:
        """One ``CreateMultiple``; the ids of the new records, in the order of ``targets``."""
        body = {"Targets": [{**target, "@odata.type": f"Microsoft.Dynamics.CRM.{logical_name}"} for target in targets]}
        answer = self._json(self._request("POST", f"{entity_set}/Microsoft.Dynamics.CRM.CreateMultiple", body=body))
        return [str(record_id).lower() for record_id in answer.get("Ids") or []]

    @property
    def parallelism(self) -> int:
        """How many writes may be in flight: the service's hint (1 without one), at most ``max_parallel``."""
        return max(1, min(self.dop_hint or 1, self.max_parallel))

    @contextlib.contextmanager
    def write_slot(self) -> Iterator[None]:
        """Holds one of ``parallelism`` write slots, shared by every thread that uses this client."""
        with self._writes:
            self._writes.wait_for(lambda: self._writes_in_flight < self.parallelism)
            self._writes_in_flight += 1
        try:
            yield
        finally:
            with self._writes:
                self._writes_in_flight -= 1
                self._writes.notify_all()


# ---- multipart answers ------------------------------------------------------------------------------------

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


def _split_parts(body: bytes, boundary: str) -> list[bytes]:
    parts: list[bytes] = []
    for piece in body.split(b"--" + boundary.encode())[1:]:
        if piece.startswith(b"--"):
            break
        piece = piece.split(b"\n", 1)[1] if b"\n" in piece else b""
        parts.append(piece[:-2] if piece.endswith(b"\r\n") else piece.rstrip(b"\n"))
    return parts


def _head(data: bytes) -> tuple[list[str], bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = data.find(separator)
        if index >= 0:
            return data[:index].decode("utf-8", "replace").splitlines(), data[index + len(separator) :]
    return data.decode("utf-8", "replace").splitlines(), b""


def _parse_multipart(body: bytes, content_type: str) -> list[BatchResult | list[BatchResult]]:
    found = _BOUNDARY.search(content_type)
    if not found:
        raise DataverseError(0, "", f"the $batch answer is not multipart ({content_type or 'no content type'})")
    answers: list[BatchResult | list[BatchResult]] = []
    for part in _split_parts(body, found.group(1) or found.group(2)):
        lines, rest = _head(part)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines) if v}
        if headers.get("content-type", "").lower().startswith("multipart/mixed"):
            inner = _parse_multipart(rest, headers["content-type"])
            answers.append([a for a in inner if isinstance(a, BatchResult)])
            continue
        status_lines, payload = _head(rest.lstrip(b"\r\n"))
        status = int(status_lines[0].split(" ")[1]) if status_lines and " " in status_lines[0] else 0
        response_headers = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in status_lines[1:])}
        text = payload.decode("utf-8", "replace").strip()
        try:
            content: Any = json.loads(text) if text else None
        except ValueError:
            content = text
        answers.append(BatchResult(status, content, response_headers, headers.get("content-id")))
    return answers


def _match_answers(
    operations: list[BatchOperation], units: list[list[int]], answers: list[BatchResult | list[BatchResult]]
) -> dict[int, BatchResult]:
    """One result per operation of the units sent, one answer per unit: a change set that succeeded answers with a
    part per operation; one that failed with a single error that answers for all its operations; units after a
    stopping error have no answer and get 424."""
    results: dict[int, BatchResult] = {}
    for position, unit in enumerate(units):
        answer = answers[position] if position < len(answers) else None
        if isinstance(answer, list) and len(answer) == len(unit):
            for index, result in zip(unit, answer, strict=True):
                result.content_id = result.content_id or operations[index].content_id
                results[index] = result
            continue
        if isinstance(answer, list):  # a failed change set some services frame as a change set of one error
            answer = next((a for a in answer if not a.ok), None)
        for index in unit:
            if answer is None:
                results[index] = BatchResult(424, None, {}, operations[index].content_id)
            else:
                results[index] = BatchResult(answer.status, answer.body, answer.headers, operations[index].content_id)
    return results


def pack(units: Sequence[list[int]], size: int = BATCH_LIMIT) -> list[list[list[int]]]:
    """The units (an operation, or a change set) in order, in ``$batch`` requests: a request closes once it holds
    ``size`` operations, or when the next unit would take it over ``BATCH_LIMIT``; a unit is never split."""
    requests_: list[list[list[int]]] = []
    count = 0
    for unit in units:
        if not requests_ or count >= size or count + len(unit) > BATCH_LIMIT:
            requests_.append([])
            count = 0
        requests_[-1].append(unit)
        count += len(unit)
    return requests_


def batch_units(operations: Sequence[BatchOperation]) -> list[list[int]]:
    """The operations as ``$batch`` sends them, as lists of indexes in order: each group that travels together in
    the place of its first operation, every other operation alone. A group is, per key that an operation's
    ``travels_with`` names, the operations naming it and those writing the row with that id; a key that gathers a
    single operation makes no group."""
    keys = {op.travels_with.lower() for op in operations if op.travels_with}
    groups: dict[str, list[int]] = {}
    for index, operation in enumerate(operations):
        key = operation.travels_with.lower() if operation.travels_with else None
        if (
            key is None
            and keys
            and (found := _ROW_PATH.match(operation.url_path))
            and found.group("id").lower() in keys
        ):
            key = found.group("id").lower()
        if key is not None:
            groups.setdefault(key, []).append(index)
    first = {group[0]: group for group in groups.values() if len(group) > 1}
    grouped = {index for group in first.values() for index in group}
    return [first.get(index, [index]) for index in range(len(operations)) if index in first or index not in grouped]
