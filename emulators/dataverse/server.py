"""The Dataverse Web API v9.2 emulator: routes, records, queries, change tracking, marketing lists,
metadata, ``$batch``, service protection and the admin routes. See the package docstring."""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from fnmatch import fnmatch
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from emulators.common import BadJsonError, Emulator, FaultSpec, Request, Response, Route

from . import batch, errors
from .errors import ApiError
from .fetchxml import Link, compile_fetch, join_value
from .latency import LatencyModel, serve
from .multiple import multiple_handlers
from .odata import ODataError, parse_filter, parse_orderby, parse_select, sort_key
from .paging import Cursor, cursor_for, outer_cookie, parse_inner, parse_outer, row_from_cursor
from .plugins import REFERENCING, PluginService, plugin_tables
from .schema import (
    ATTRIBUTE_METADATA_PROPERTIES,
    BOOLEAN,
    ENTITY_METADATA_PROPERTIES,
    KEY_METADATA_PROPERTIES,
    LIST_NAVIGATIONS,
    LOOKUP,
    MANY_TO_MANY,
    MEMBER_TYPE_CODES,
    RELATIONSHIP_METADATA_PROPERTIES,
    TYPED_ATTRIBUTE_PROPERTIES,
    Relationship,
    Table,
    attribute_cast_type,
    attribute_from_metadata,
    attribute_metadata,
    builtin_relationships,
    builtin_tables,
    check_publisher,
    entity_metadata,
    metadata_type,
    relationship_from_metadata,
    relationship_metadata,
    table_from_metadata,
)
from .store import Store, TableData
from .throttle import ServiceProtection
from .values import convert, etag, new_id, now_seconds, parse_guid, project

BASE = "/api/data/v9.2"
JSON_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
ERROR_TYPE = "application/json; odata.metadata=minimal"
MAX_PAGE = 5000
FETCH_UNPAGED_LIMIT = 50_000  # records reachable with page/count and no paging cookie  # unverified
SYSTEM_OPTIONS = frozenset(
    {"$select", "$filter", "$orderby", "$top", "$count", "$expand", "$apply", "$skiptoken", "$deltatoken"}
)
DYNAMICS_USER = str(uuid.uuid5(uuid.NAMESPACE_URL, "dataverse-emulator/dynamics-user"))
ORGANIZATION_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "dataverse-emulator/organization"))
BUSINESS_UNIT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "dataverse-emulator/business-unit"))

_KEY = r"\((?P<key>[^/]*)\)"
_SET = r"(?P<entityset>[A-Za-z_][A-Za-z0-9_]*)"
_NAV = r"(?P<nav>[A-Za-z_][A-Za-z0-9_]*)"


@dataclass
class Prefer:
    maxpagesize: int | None = None
    track_changes: bool = False
    annotations: list[str] | None = None
    representation: bool = False
    continue_on_error: bool = False
    applied: list[str] = field(default_factory=list)

    def wants(self, annotation: str) -> bool:
        return any(fnmatch(annotation, pattern) for pattern in self.annotations or [])

    def annotation_set(self) -> set[str] | None:
        return set(self.annotations) if self.annotations else None


def _split_prefer(text: str) -> list[str]:
    items, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append(current.strip())
            current = ""
        else:
            current += char
    items.append(current.strip())
    return [item for item in items if item]


def parse_prefer(request: Request) -> Prefer:
    prefer = Prefer()
    for item in _split_prefer(",".join(request.headers.get_all("Prefer") or [])):
        name, _, value = item.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "odata.maxpagesize" and value.isdigit():
            prefer.maxpagesize = min(max(int(value), 1), MAX_PAGE)
        elif name == "odata.track-changes":
            prefer.track_changes = True
        elif name == "odata.include-annotations":
            prefer.annotations = [v.strip() for v in value.split(",") if v.strip()]
        elif name == "return" and value == "representation":
            prefer.representation = True
        elif name == "odata.continue-on-error":
            prefer.continue_on_error = True
    return prefer


@dataclass
class _Cached:
    mutations: int
    ids: list[str]
    keys: list[Any]
    key_fn: Callable[[dict], Any] | None


class _Context:
    """The RowContext predicates use: related rows and the emulator clock."""

    def __init__(self, emulator: DataverseEmulator) -> None:
        self.emulator = emulator

    def now(self) -> datetime:
        return self.emulator.clock.now()

    def related(self, row: dict, navigation: Any) -> Iterable[dict]:
        return self.emulator.related_rows(row, navigation)


class DataverseEmulator(Emulator):
    name = "dataverse"

    def __init__(self) -> None:
        super().__init__()
        self.data_lock = threading.RLock()
        self.protection = ServiceProtection(lambda: self.clock.now())
        self.latency = LatencyModel()
        self.batch_parts: Counter[str] = Counter()
        self.bulk_targets: Counter[str] = Counter()  # records written by CreateMultiple/UpdateMultiple, by message
        self.plugins = PluginService(self)
        self.plugins.outbox.register(self.admin, "/_admin/webhooks")
        self._register_routes()
        self.rows_examined = 0  # rows a query looked at: paging must cost the page, not the table
        self._register_admin_routes()
        self.reset()

    # ================================================================================================
    # state
    # ================================================================================================
    def reset(self) -> None:
        with self.data_lock:
            self.tables: dict[str, Table] = {}
            self.sets: dict[str, Table] = {}
            for table in [*builtin_tables(), *plugin_tables()]:
                self._register_table(table)
            self.store = Store(list(self.tables.values()))
            self.store.observer = self.plugins.observe
            self.plugins.seed()
            self.relationships: dict[str, Relationship] = {r.schema_name: r for r in builtin_relationships()}
            self.cache: OrderedDict[tuple, _Cached] = OrderedDict()
            self.join_indexes: dict[tuple[str, str], tuple[int, dict[Any, list[dict]]]] = {}
            self.defaults: dict[str, dict[str, Any]] = {}
            self.next_object_type_code = 10000
            # solution components as created: {"solution", "type", "name", "table"}; "Default" without the header
            self.components: list[dict[str, str]] = []
            self.settings: dict[str, Any] = {
                "changeTrackingExpireDays": 7,
                "inactiveReadOnly": True,
                "publisherPrefixes": ["new", "cbr"],
                "requireToken": False,
                "latencySeconds": 0.0,
                "faultRetryAfter": "1",
            }
            self.batch_parts.clear()
            self.bulk_targets.clear()
            self.protection.reset()
            self.latency = LatencyModel()

    def close(self) -> None:
        self.plugins.close()

    def _register_table(self, table: Table) -> None:
        table.lookup = self.tables.get
        self.tables[table.logical_name] = table
        self.sets[table.entity_set_name] = table

    def related_rows(self, row: dict, navigation: Any) -> list[dict]:
        """Rows reached from ``row`` through a list membership navigation property."""
        if not isinstance(navigation, str):
            return self._link_rows(row, navigation)
        store = self.store
        if "listid" in row and navigation in LIST_NAVIGATIONS.values():
            target = next(t for t, nav in LIST_NAVIGATIONS.items() if nav == navigation)
            if MEMBER_TYPE_CODES.get(row.get("createdfromcode") or 0) != target:
                return []
            rows = store.data(target).rows
            return [rows[i] for i in store.member_ids(row["listid"]) if i in rows]
        for logical, nav in LIST_NAVIGATIONS.items():
            pk = f"{logical}id"
            if nav == navigation and pk in row:
                lists = store.data("list").rows
                return [lists[i] for i in sorted(store.lists_of(row[pk])) if i in lists]
        return []

    def _link_rows(self, row: dict, link: Link) -> list[dict]:
        """Rows a FetchXML ``<link-entity>`` joins to ``row``: ``link.entity`` rows whose ``link.from_key``
        equals ``row[link.to_key]``; the joins marketing lists use are answered from the indexes."""
        value = join_value(row.get(link.to_key))
        if value is None or link.entity not in self.tables:
            return []
        store = self.store
        data = store.data(link.entity)
        if link.from_key == data.table.primary_id:
            found = data.rows.get(value)
            return [found] if found is not None else []
        if link.entity == "listmember" and link.from_key == "_entityid_value":
            return [data.rows[store.membership[(list_id, value)]] for list_id in sorted(store.lists_of(value))]
        if link.entity == "listmember" and link.from_key == "_listid_value":
            return [data.rows[store.membership[(value, member)]] for member in store.member_ids(value)]
        cached = self.join_indexes.get((link.entity, link.from_key))
        if cached is None or cached[0] != store.mutations:
            index: dict[Any, list[dict]] = {}
            for candidate in data.rows.values():
                key = join_value(candidate.get(link.from_key))
                if key is not None:
                    index.setdefault(key, []).append(candidate)
            cached = (store.mutations, index)
            self.join_indexes[(link.entity, link.from_key)] = cached
        return cached[1].get(value, [])

    # ================================================================================================
    # plumbing: routes, errors, service protection, faults
    # ================================================================================================
    def _register_routes(self) -> None:
        add = self._add
        add("GET", "/", r"^/api/data/v9\.2/?$", self._service_document)
        add("GET", "/$metadata", r"^/api/data/v9\.2/\$metadata$", self._csdl)
        add("GET", "/WhoAmI", r"^/api/data/v9\.2/(Microsoft\.Dynamics\.CRM\.)?WhoAmI(\(\))?$", self._whoami)
        add("POST", "/$batch", r"^/api/data/v9\.2/\$batch$", self._batch)
        for action in ("PublishXml", "PublishAllXml"):
            add("POST", f"/{action}", rf"^/api/data/v9\.2/(Microsoft\.Dynamics\.CRM\.)?{action}$", self._publish)
        add(
            "POST",
            "/AddListMembersList",
            r"^/api/data/v9\.2/(Microsoft\.Dynamics\.CRM\.)?AddListMembersList$",
            self._add_list_members,
        )
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            add(method, "/EntityDefinitions{rest}", r"^/api/data/v9\.2/EntityDefinitions(?P<rest>.*)$", self._metadata)
            add(
                method,
                "/RelationshipDefinitions{rest}",
                r"^/api/data/v9\.2/RelationshipDefinitions(?P<rest>.*)$",
                self._relationship_definitions,
            )
        add(
            "POST",
            "/{entityset}({id})/Microsoft.Dynamics.CRM.AddMemberList",
            rf"^/api/data/v9\.2/{_SET}{_KEY}/(Microsoft\.Dynamics\.CRM\.)?AddMemberList$",
            self._add_member_list,
        )
        add(
            "POST",
            "/{entityset}({id})/Microsoft.Dynamics.CRM.RemoveMemberList",
            rf"^/api/data/v9\.2/{_SET}{_KEY}/(Microsoft\.Dynamics\.CRM\.)?RemoveMemberList$",
            self._remove_member_list,
        )
        add("POST", "/{entityset}({id})/{nav}/$ref", rf"^/api/data/v9\.2/{_SET}{_KEY}/{_NAV}/\$ref$", self._associate)
        add(
            "DELETE",
            "/{entityset}({id})/{nav}({id})/$ref",
            rf"^/api/data/v9\.2/{_SET}{_KEY}/{_NAV}\((?P<related>[^/]*)\)/\$ref$",
            self._disassociate,
        )
        add(
            "DELETE",
            "/{entityset}({id})/{nav}/$ref",
            rf"^/api/data/v9\.2/{_SET}{_KEY}/{_NAV}/\$ref$",
            self._disassociate,
        )
        add("GET", "/{entityset}({id})/{nav}", rf"^/api/data/v9\.2/{_SET}{_KEY}/{_NAV}$", self._get_related)
        add("GET", "/{entityset}({id})", rf"^/api/data/v9\.2/{_SET}{_KEY}$", self._retrieve)
        add("PATCH", "/{entityset}({id})", rf"^/api/data/v9\.2/{_SET}{_KEY}$", self._patch)
        add("DELETE", "/{entityset}({id})", rf"^/api/data/v9\.2/{_SET}{_KEY}$", self._delete)
        add("GET", "/{entityset}/$count", rf"^/api/data/v9\.2/{_SET}/\$count$", self._count)
        add("GET", "/{entityset}", rf"^/api/data/v9\.2/{_SET}$", self._get_collection)
        add("POST", "/{entityset}", rf"^/api/data/v9\.2/{_SET}$", self._create)
        for message, handler in multiple_handlers(self).items():
            add(
                "POST",
                f"/{{entityset}}/Microsoft.Dynamics.CRM.{message}",
                rf"^/api/data/v9\.2/{_SET}/Microsoft\.Dynamics\.CRM\.{message}$",
                handler,
            )
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            add(method, "/{unknown}", r"^/api/data/v9\.2/(?P<rest>.*)$", self._unknown_resource)

    def _add(self, method: str, template: str, regex: str, handler: Callable[[Request], Response]) -> None:
        self.router.add(method, BASE + template, self._guard(handler), regex=regex)

    def _guard(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def run(request: Request) -> Response:
            try:
                return handler(request)
            except ApiError as exc:
                return self.api_error(exc)
            except ODataError as exc:
                return self.api_error(ApiError(exc.status, exc.code, exc.message))
            except BadJsonError:
                return self.api_error(
                    ApiError(400, "0x80060888", "Invalid JSON. The request body could not be read as a JSON object.")
                )  # text unverified

        return run

    def api_error(self, exc: ApiError) -> Response:
        body = json.dumps({"error": {"code": exc.code, "message": exc.message}}).encode()
        return Response(exc.status, body, {"Content-Type": ERROR_TYPE, "OData-Version": "4.0", **exc.headers})

    def error(self, status: int, message: str, request: Request) -> Response:
        code = "0x8006088a" if status == 404 else "0x80060888"
        return self.api_error(ApiError(status, code, message))

    def fault_response(self, fault: FaultSpec, request: Request) -> Response:
        retry_after = str(self.settings["faultRetryAfter"])
        if fault.status == 429:
            if fault.variant == "empty":
                return Response(429, b"", {"Retry-After": retry_after, "OData-Version": "4.0"})
            limits = self.protection.limits
            return self.api_error(errors.request_limit(limits.requests, limits.window_seconds, retry_after))
        problem = errors.unexpected(fault.status)
        if fault.status == 503:
            problem.headers["Retry-After"] = retry_after
        return self.api_error(problem)

    def authenticate(self, request: Request) -> Response | None:
        if self.settings["requireToken"] and not (request.header("Authorization") or "").lower().startswith("bearer "):
            return Response(
                401,
                b"",
                {
                    "WWW-Authenticate": "Bearer authorization_uri=https://login.microsoftonline."
                    "com/common/oauth2/authorize",
                    "OData-Version": "4.0",
                },
            )
        return None

    def dispatch(self, route: Route, request: Request) -> Response:
        user = caller(request)
        denial = self.protection.admit(user)
        if denial is not None:
            self.latency.note_throttled()
            return self.api_error(denial)
        started = time.perf_counter()
        try:
            latency = float(self.settings["latencySeconds"])
            if latency > 0:
                time.sleep(latency)
            if self.latency.enabled:
                return serve(self.latency, route.name, request, route.handler)
            return route.handler(request)
        finally:
            self.protection.release(user, (time.perf_counter() - started) * 1000)

    # ---- small helpers ----------------------------------------------------------------------------
    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return Response(status, data, {"Content-Type": JSON_TYPE, "OData-Version": "4.0", **(headers or {})})

    @staticmethod
    def _base(request: Request) -> str:
        return f"http://{request.header('Host') or '127.0.0.1'}{BASE}"

    def _set_table(self, name: str) -> Table:
        table = self.sets.get(name)
        if table is None:
            raise errors.segment_not_found(name)
        return table

    def _record_id(self, table: Table, key: str) -> str:
        guid = parse_guid(unquote(key))
        if guid is None:
            type_name = f"Microsoft.Dynamics.CRM.{table.logical_name}"
            raise ApiError(
                400,
                "0x80060888",
                f"The key in the request URI is not valid for resource '{type_name}'. Ensure that the "
                f"names and number of key properties match the declared or alternate key properties "
                f"for the resource '{type_name}'.",
            )
        return guid

    def _check_options(self, request: Request) -> None:
        for name in request.query:
            if name.startswith("$") and name not in SYSTEM_OPTIONS:
                raise errors.unsupported_query_option(name)
        if "$expand" in request.query:
            raise errors.not_implemented("$expand")
        if "$apply" in request.query:
            raise errors.not_implemented("$apply")

    @staticmethod
    def _aliases(request: Request) -> dict[str, str]:
        return {name: values[0] for name, values in request.query.items() if name.startswith("@")}

    def _select(self, request: Request, table: Table) -> list[str] | None:
        text = request.arg("$select")
        return None if text is None else parse_select(text, table)

    def _context_url(self, request: Request, table: Table, select: list[str] | None, suffix: str = "") -> str:
        columns = f"({','.join(select)})" if select else ""
        return f"{self._base(request)}/$metadata#{table.entity_set_name}{columns}{suffix}"

    def _link(self, request: Request, option: str, value: str, drop: tuple[str, ...] = ("$skiptoken",)) -> str:
        """The request's own URL with ``option`` set to ``value`` (the ``drop`` options removed)."""
        kept = [p for p in request.raw_query.split("&") if p and unquote(p.partition("=")[0]) not in drop]
        kept.append(f"{option}={quote(value, safe='')}")
        return f"http://{request.header('Host') or '127.0.0.1'}{request.path}?{'&'.join(kept)}"

    def _body(self, request: Request) -> dict[str, Any]:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "0x80060888", "The request body must be a JSON object.")  # text unverified
        return body

    def _now(self) -> datetime:
        return now_seconds(self.clock.now())

    # ================================================================================================
    # service document, WhoAmI, publish, unknown resources
    # ================================================================================================
    def _service_document(self, request: Request) -> Response:
        sets = [{"name": name, "kind": "EntitySet", "url": name} for name in sorted(self.sets)]
        return self._json(200, {"@odata.context": f"{self._base(request)}/$metadata", "value": sets})

    def _csdl(self, request: Request) -> Response:
        raise errors.not_implemented("the CSDL $metadata document")

    def _whoami(self, request: Request) -> Response:
        return self._json(
            200,
            {
                "@odata.context": f"{self._base(request)}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": BUSINESS_UNIT_ID,
                "UserId": user_id(caller(request)),
                "OrganizationId": ORGANIZATION_ID,
            },
        )

    def _publish(self, request: Request) -> Response:
        if request.body:
            self._body(request)
        return Response(204, b"", {"OData-Version": "4.0"})

    def _unknown_resource(self, request: Request) -> Response:
        segment = unquote(request.params.get("rest", "")).split("/")[0].split("(")[0] or request.path
        raise errors.segment_not_found(segment)

    # ================================================================================================
    # queries
    # ================================================================================================
    def _get_collection(self, request: Request) -> Response:
        table = self._set_table(request.params["entityset"])
        return self._query(request, table, None, None)

    def _navigation(self, request: Request) -> tuple[Table, Any, str]:
        """(table, navigation property, record id) of an ``<set>(<id>)/<nav>`` path."""
        table = self._set_table(request.params["entityset"])
        nav_name = request.params["nav"]
        navigation = table.navigations.get(nav_name)
        if navigation is None:
            raise errors.segment_not_found(nav_name)
        return table, navigation, self._record_id(table, request.params["key"])

    def _get_related(self, request: Request) -> Response:
        table, navigation, record_id = self._navigation(request)
        target = self.tables[navigation.target]
        with self.data_lock:
            row = self.store.data(table.logical_name).rows.get(record_id)
            if row is None:
                raise errors.not_found(table.logical_name, record_id)
            if table.logical_name == "list":
                member_type = MEMBER_TYPE_CODES.get(row.get("createdfromcode") or 0)
                ids = self.store.member_ids(record_id) if member_type == target.logical_name else []
            elif navigation.name in REFERENCING:
                ids = self.plugins.referencing(navigation, record_id)
            else:
                ids = sorted(self.store.lists_of(record_id))
            scope_key = ("nav", table.logical_name, record_id, request.params["nav"])
            return self._query(request, target, list(ids), scope_key)

    def _count(self, request: Request) -> Response:
        table = self._set_table(request.params["entityset"])
        self._check_options(request)
        delta = request.arg("$deltatoken")
        if delta is not None:
            return self._count_changes(request, table, delta)
        text = request.arg("$filter")
        with self.data_lock:
            data = self.store.data(table.logical_name)
            if text is None:
                total = len(data.order)
            else:
                predicate = parse_filter(text, table, aliases=self._aliases(request))
                total = len(self._evaluate(table, data, None, None, predicate, text, [], "").ids)
        return Response(200, str(min(total, MAX_PAGE)).encode(), {"Content-Type": "text/plain", "OData-Version": "4.0"})

    def _count_changes(self, request: Request, table: Table, delta: str) -> Response:
        """``<set>/$count?$deltatoken=``: how many changes (changed rows and deletions) the delta link holds."""
        for option in ("$filter", "$orderby", "$expand", "$top"):
            if option in request.query:
                raise errors.track_changes_option(option)
        if not table.change_tracking:
            raise errors.change_tracking_disabled(table.logical_name)
        with self.data_lock:
            since = self._delta_version(delta)
            data = self.store.data(table.logical_name)
            upto = self.store.version
            changed = sum(1 for _ in data.changed_since(since, upto))
            deleted = 0
            for version, row_id in data.deleted_since(since, upto):
                revived = data.rows.get(row_id)
                deleted += not (revived is not None and revived["versionnumber"] > version)
        total = changed + deleted
        return Response(200, str(min(total, MAX_PAGE)).encode(), {"Content-Type": "text/plain", "OData-Version": "4.0"})

    def _query(self, request: Request, table: Table, scope: list[str] | None, scope_key: tuple | None) -> Response:
        self._check_options(request)
        prefer = parse_prefer(request)
        fetch_xml = request.arg("fetchXml")
        if fetch_xml is not None:
            if scope is not None:
                raise ApiError(400, "0x80040203", "FetchXML queries are only supported on entity sets.")  # unverified
            return self._fetch(request, table, fetch_xml, prefer)
        token = request.arg("$skiptoken")
        cursor = parse_outer(token, table.primary_id) if token is not None else None
        if "$deltatoken" in request.query or prefer.track_changes or (cursor and cursor.snapshot is not None):
            return self._track_changes(request, table, prefer, scope)
        select = self._select(request, table)
        aliases = self._aliases(request)
        filter_text = request.arg("$filter")
        predicate = parse_filter(filter_text, table, aliases=aliases) if filter_text is not None else None
        orderby_text = request.arg("$orderby") or ""
        orderby = parse_orderby(orderby_text, table, aliases=aliases) if orderby_text else []
        top = _whole_number(request.arg("$top"), "$top")
        if prefer.maxpagesize is not None:
            page_size = prefer.maxpagesize
            prefer.applied.append(f"odata.maxpagesize={page_size}")
        else:
            page_size = min(top, MAX_PAGE) if top is not None else MAX_PAGE
        with self.data_lock:
            data = self.store.data(table.logical_name)
            if predicate is None and not orderby:
                ids = scope if scope is not None else data.order
                start = bisect.bisect_right(ids, cursor.last_id) if cursor and cursor.last_id else 0
                page_ids = ids[start : start + page_size]
                rows = [data.rows[i] for i in page_ids if i in data.rows]
                self.rows_examined += len(page_ids)
                more, total = start + page_size < len(ids), len(ids)
            else:
                result = self._evaluate(
                    table, data, scope, scope_key, predicate, filter_text or "", orderby, orderby_text, aliases
                )
                start = self._resume(table, result, cursor)
                rows = [data.rows[i] for i in result.ids[start : start + page_size]]
                self.rows_examined += len(rows)
                more, total = start + page_size < len(result.ids), len(result.ids)
            if top is not None and prefer.maxpagesize is None:
                more = False
            annotations = prefer.annotation_set()
            body: dict[str, Any] = {"@odata.context": self._context_url(request, table, select)}
            if request.arg("$count") == "true":
                body["@odata.count"] = min(total, MAX_PAGE)
                if prefer.wants("Microsoft.Dynamics.CRM.totalrecordcount"):
                    body["@Microsoft.Dynamics.CRM.totalrecordcount"] = min(total, MAX_PAGE)
                if prefer.wants("Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"):
                    body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] = total > MAX_PAGE
            body["value"] = [project(table, row, select, annotations) for row in rows]
            if more and rows:
                page = (cursor.page if cursor else 0) + 1
                next_cursor = cursor_for(page, table.primary_id, rows[0], rows[-1], [k for k, _ in orderby])
                body["@odata.nextLink"] = self._link(request, "$skiptoken", outer_cookie(next_cursor, table.primary_id))
        if prefer.annotations:
            prefer.applied.append(f'odata.include-annotations="{",".join(prefer.annotations)}"')
        headers = {"Preference-Applied": ",".join(prefer.applied)} if prefer.applied else {}
        return self._json(200, body, headers)

    def _evaluate(
        self,
        table: Table,
        data: TableData,
        scope: list[str] | None,
        scope_key: tuple | None,
        predicate: Callable | None,
        filter_text: str,
        orderby: list[tuple[str, bool]],
        orderby_text: str,
        aliases: dict[str, str] | str = "",
    ) -> _Cached:
        """The ids matching a filter, in query order; cached until the next write anywhere."""
        relative = "Microsoft.Dynamics.CRM." in filter_text or filter_text.startswith("fetch:")
        clock_key = self.clock.now().replace(microsecond=0) if relative else None
        key = (table.logical_name, scope_key, filter_text, orderby_text, json.dumps(aliases, sort_keys=True), clock_key)
        cached = self.cache.get(key)
        if cached is not None and cached.mutations == self.store.mutations:
            self.cache.move_to_end(key)
            return cached
        source = scope if scope is not None else data.order
        rows = [data.rows[i] for i in source if i in data.rows]
        self.rows_examined += len(source)
        if predicate is not None:
            context = _Context(self)
            rows = [row for row in rows if predicate(row, context)]
        pk = table.primary_id
        key_fn = sort_key(orderby) if orderby else None
        if key_fn is not None:
            rows.sort(key=key_fn)
            keys: list[Any] = [(key_fn(row), row[pk]) for row in rows]
        else:
            keys = [row[pk] for row in rows]
        cached = _Cached(self.store.mutations, [row[pk] for row in rows], keys, key_fn)
        self.cache[key] = cached
        while len(self.cache) > 16:
            self.cache.popitem(last=False)
        return cached

    @staticmethod
    def _resume(table: Table, result: _Cached, cursor: Cursor | None) -> int:
        if cursor is None or cursor.last_id is None:
            return 0
        if result.key_fn is None:
            return bisect.bisect_right(result.keys, cursor.last_id)
        stand_in = row_from_cursor(table, cursor)
        return bisect.bisect_right(result.keys, (result.key_fn(stand_in), cursor.last_id))

    def _retrieve(self, request: Request) -> Response:
        table = self._set_table(request.params["entityset"])
        if not table.can_retrieve:
            raise ApiError(
                400, "0x80040800", f"The 'Retrieve' method does not support entities of type '{table.logical_name}'."
            )  # text unverified
        record_id = self._record_id(table, request.params["key"])
        for name in request.query:
            if name.startswith("$") and name not in ("$select", "$expand"):
                raise errors.unsupported_query_option(name)
        if "$expand" in request.query:
            raise errors.not_implemented("$expand")
        select = self._select(request, table)
        prefer = parse_prefer(request)
        with self.data_lock:
            row = self.store.data(table.logical_name).rows.get(record_id)
            if row is None:
                raise errors.not_found(table.logical_name, record_id)
            if request.header("If-None-Match") == etag(row) and not prefer.annotations:
                return Response(304, b"", {"OData-Version": "4.0", "ETag": etag(row)})
            body = {
                "@odata.context": self._context_url(request, table, select, "/$entity"),
                **project(table, row, select, prefer.annotation_set()),
            }
        return self._json(200, body, {"ETag": etag(row)})

    # ---- change tracking ----------------------------------------------------------------------------
    def _track_changes(self, request: Request, table: Table, prefer: Prefer, scope: list[str] | None) -> Response:
        for option in ("$filter", "$orderby", "$expand", "$top"):
            if option in request.query:
                raise errors.track_changes_option(option)
        if scope is not None:
            raise ApiError(400, "0x80060888", "Change tracking is only supported on entity sets.")  # unverified
        if not table.change_tracking:
            raise errors.change_tracking_disabled(table.logical_name)
        select = self._select(request, table)
        page_size = prefer.maxpagesize or MAX_PAGE
        if prefer.maxpagesize is not None:
            prefer.applied.append(f"odata.maxpagesize={page_size}")
        token = request.arg("$skiptoken")
        cursor = parse_outer(token, table.primary_id) if token is not None else None
        delta = request.arg("$deltatoken")
        with self.data_lock:
            data = self.store.data(table.logical_name)
            if delta is None:
                prefer.applied.insert(0, "odata.track-changes")
                snapshot = cursor.snapshot if cursor and cursor.snapshot is not None else self.store.version
                start = bisect.bisect_right(data.order, cursor.last_id) if cursor and cursor.last_id else 0
                rows = [data.rows[i] for i in data.order[start : start + page_size]]
                items = [project(table, row, select) for row in rows]
                more = start + page_size < len(data.order)
                context = self._context_url(request, table, select)
                next_cursor = (
                    cursor_for((cursor.page if cursor else 0) + 1, table.primary_id, rows[0], rows[-1], [], snapshot)
                    if more and rows
                    else None
                )
            else:
                since = self._delta_version(delta)
                snapshot = cursor.snapshot if cursor and cursor.snapshot is not None else self.store.version
                items, next_cursor = self._changes_since(
                    request, table, data, select, since, snapshot, cursor, page_size
                )
                context = self._context_url(request, table, select, "/$delta")
        body: dict[str, Any] = {"@odata.context": context, "value": items}
        if next_cursor is not None:
            body["@odata.nextLink"] = self._link(request, "$skiptoken", outer_cookie(next_cursor, table.primary_id))
        else:
            token_text = f"{snapshot}!{self.clock.now():%m/%d/%Y %H:%M:%S}"
            body["@odata.deltaLink"] = self._link(
                request, "$deltatoken", token_text, drop=("$skiptoken", "$deltatoken")
            )
        headers = {"Preference-Applied": ",".join(prefer.applied)} if prefer.applied else {}
        return self._json(200, body, headers)

    def _delta_version(self, token: str) -> int:
        version_text, _, issued_text = token.partition("!")
        try:
            version = int(version_text)
            issued = datetime.strptime(issued_text, "%m/%d/%Y %H:%M:%S").replace(tzinfo=UTC)
        except ValueError as exc:
            raise errors.bad_delta_token(token) from exc
        if version > self.store.version:
            raise errors.bad_delta_token(token)
        if self.clock.now() - issued > timedelta(days=float(self.settings["changeTrackingExpireDays"])):
            raise errors.expired_delta_token()
        return version

    def _changes_since(
        self,
        request: Request,
        table: Table,
        data: TableData,
        select: list[str] | None,
        since: int,
        snapshot: int,
        cursor: Cursor | None,
        page_size: int,
    ) -> tuple[list[dict], Cursor | None]:
        """Changed rows by version, then deleted rows; one page, and the cursor of the next one."""
        position = dict(cursor.values) if cursor else {}
        phase, after = position.get("phase", "changed"), int(position.get("after") or 0)
        items: list[dict] = []
        last_version = after
        if phase == "changed":
            for row in data.changed_since(since, snapshot, after):
                if len(items) == page_size:
                    return items, Cursor(
                        (cursor.page if cursor else 0) + 1,
                        None,
                        values=[("phase", "changed"), ("after", str(last_version))],
                        snapshot=snapshot,
                    )
                items.append(project(table, row, select))
                last_version = row["versionnumber"]
            phase, after, last_version = "deleted", 0, 0
        deleted_context = f"{self._base(request)}/$metadata#{table.entity_set_name}/$deletedEntity"
        for version, row_id in data.deleted_since(since, snapshot, after):
            revived = data.rows.get(row_id)
            if revived is not None and revived["versionnumber"] > version:
                continue  # deleted and created again with the same id: the live row was reported above
            if len(items) == page_size:
                return items, Cursor(
                    (cursor.page if cursor else 0) + 1,
                    None,
                    values=[("phase", "deleted"), ("after", str(last_version))],
                    snapshot=snapshot,
                )
            items.append({"@odata.context": deleted_context, "id": row_id, "reason": "deleted"})
            last_version = version
        return items, None

    # ---- FetchXML ----------------------------------------------------------------------------------
    def _fetch(self, request: Request, table: Table, fetch_xml: str, prefer: Prefer) -> Response:
        plan = compile_fetch(fetch_xml, self.tables.get)
        if plan.entity != table.logical_name:
            raise ApiError(
                400,
                "0x80040203",
                f"The entity name '{plan.entity}' in the FetchXML does not match "
                f"the entity set '{table.entity_set_name}'.",
            )  # text unverified
        count = plan.top or plan.count or MAX_PAGE
        if count > MAX_PAGE:
            raise ApiError(400, "0x80040203", f"The count attribute of a fetch may not exceed {MAX_PAGE}.")  # unver.
        page = plan.page or 1
        cursor = parse_inner(plan.paging_cookie, table.primary_id) if plan.paging_cookie else None
        if cursor is None and page * count > FETCH_UNPAGED_LIMIT:
            raise ApiError(
                400,
                "0x8004430A",
                "Over upper limit of records that can be requested without a paging "
                "cookie. A paging cookie is required when retrieving a high page "
                "number.",
            )
        orders = list(plan.orders)
        with self.data_lock:
            data = self.store.data(table.logical_name)
            result = self._evaluate(
                table,
                data,
                None,
                ("fetch",),
                plan.predicate,
                f"fetch:{_without_paging(fetch_xml)}",
                orders,
                repr(orders),
            )
            start = self._resume(table, result, cursor) if cursor and cursor.last_id else (page - 1) * count
            rows: list[dict] = []
            seen: set[tuple] = set()
            keys = plan.attributes
            for row_id in result.ids[start:]:
                row = data.rows[row_id]
                if plan.distinct:
                    signature = tuple(repr(row.get(k)) for k in (keys or table.row_keys()))
                    if signature in seen:
                        continue
                    seen.add(signature)
                rows.append(row)
                if len(rows) > count:
                    break
            more = len(rows) > count and plan.top is None
            rows = rows[:count]
            items = [project(table, row, keys, prefer.annotation_set(), omit_nulls=True) for row in rows]
        body: dict[str, Any] = {"@odata.context": self._context_url(request, table, None), "value": items}
        wants_cookie = prefer.wants("Microsoft.Dynamics.CRM.fetchxmlpagingcookie") or prefer.wants(
            "Microsoft.Dynamics.CRM.morerecords"
        )
        if more and rows and wants_cookie:
            next_cursor = cursor_for(page, table.primary_id, rows[0], rows[-1], [k for k, _ in orders])
            body["@Microsoft.Dynamics.CRM.fetchxmlpagingcookie"] = outer_cookie(next_cursor, table.primary_id)
            body["@Microsoft.Dynamics.CRM.morerecords"] = True
        headers = {}
        if prefer.annotations:
            headers["Preference-Applied"] = f'odata.include-annotations="{",".join(prefer.annotations)}"'
        return self._json(200, body, headers)

    # ================================================================================================
    # writes
    # ================================================================================================
    def _table_defaults(self, table: Table) -> dict[str, Any]:
        defaults = self.defaults.get(table.logical_name)
        if defaults is None:
            defaults = {}
            for attribute in table.attributes.values():
                value = attribute.default
                if attribute.type == BOOLEAN and value is None:
                    value = False
                defaults[attribute.row_key] = value
            if "statuscode" in table.attributes:
                defaults["statuscode"] = table.default_status(0)
            self.defaults[table.logical_name] = defaults
        return defaults

    def _changes(
        self, table: Table, body: dict[str, Any], creating: bool, current: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The body's columns converted and checked for a create or an update."""
        changes: dict[str, Any] = {}
        for key, value in body.items():
            if key.startswith("@"):
                continue  # instance annotations such as @odata.type
            if key.endswith("@odata.bind"):
                binding = table.bindings.get(key)
                if binding is None:  # navigation property names are case-sensitive: the lookup's SchemaName
                    raise errors.undeclared_navigation(key.split("@")[0])
                lookup, target = binding
                changes[f"_{lookup}_value"] = self._bound_id(value, target)
                changes[f"_{lookup}_value@target"] = target
                continue
            if "@" in key:
                continue
            attribute = table.attributes.get(key)
            if attribute is None or attribute.type == LOOKUP:
                raise errors.undeclared_property(key, table.logical_name)
            converted = convert(table, attribute, value)
            if attribute.is_primary_id:
                if current is not None and converted != current[table.primary_id]:
                    raise ApiError(400, "0x80040203", f"The value of '{key}' cannot be changed.")  # unverified
                changes[key] = converted
                continue
            if creating and not attribute.valid_for_create and key not in ("statecode",):
                raise errors.not_valid_for(key, table.logical_name, "create")
            if not creating and not attribute.valid_for_update:
                raise errors.not_valid_for(key, table.logical_name, "update")
            changes[key] = converted
        self._check_state(table, changes, current)
        return changes

    def _check_state(self, table: Table, changes: dict[str, Any], current: dict[str, Any] | None) -> None:
        if "statecode" not in changes and "statuscode" not in changes:
            return
        state = changes.get("statecode", (current or {}).get("statecode", 0))
        status = changes.get("statuscode")
        if status is None:
            changes["statuscode"] = table.default_status(state)
            return
        status_attribute = table.attributes["statuscode"]
        option = next((o for o in status_attribute.options if o.value == status), None)
        if option is not None and option.state is not None and option.state != state:
            raise ApiError(
                400,
                "0x8004431b",
                f"{status} is not a valid status code for state code "
                f"{table.schema_name}State.{state} on {table.logical_name}.",
            )  # unver.

    def _bound_id(self, value: Any, target: str) -> str:
        if not isinstance(value, str):
            raise errors.bad_literal(value, "Edm.String")
        table, record_id = self._reference(value)
        if table.logical_name != target:
            raise ApiError(
                400,
                "0x80060888",
                f"The entity set '{table.entity_set_name}' does not match the navigation property target '{target}'.",
            )  # unverified
        if record_id not in self.store.data(target).rows:
            raise errors.not_found(target, record_id)
        return record_id

    def _reference(self, value: str) -> tuple[Table, str]:
        """A record URL (absolute, ``/api/data/v9.2/...`` or ``contacts(<id>)``) as (table, id)."""
        path = unquote(urlsplit(value).path if "://" in value else value)
        found = re.search(r"(?:^|/)([A-Za-z_][A-Za-z0-9_]*)\(([^)]*)\)$", path)
        if not found:
            raise ApiError(400, "0x80060888", f"The URI '{value}' is not a valid entity reference.")  # unverified
        table = self._set_table(found.group(1))
        return table, self._record_id(table, found.group(2))

    def _new_row(self, table: Table, changes: dict[str, Any], record_id: str, user: str) -> dict[str, Any]:
        row = dict(self._table_defaults(table))
        row.update(changes)
        row[table.primary_id] = record_id
        now = self._now()
        row["createdon"] = row["modifiedon"] = now
        row["_createdby_value"] = row["_modifiedby_value"] = user
        _compute(table, row)
        return row

    def _check_required(self, table: Table, row: dict[str, Any]) -> None:
        self.plugins.check(table, row)
        if table.logical_name == "savedquery":
            self._check_view(row)
        if table.logical_name in ("publisher", "solution"):
            self._check_unique_name(table, row)
        if table.logical_name == "publisher":
            check_publisher(row)
        if table.logical_name == "list":
            for name in ("listname", "createdfromcode"):
                if row.get(name) is None:
                    raise ApiError(400, "0x80040203", f"Attribute '{name}' is required for list.")  # unverified
            if row.get("type") and row.get("lockstatus"):
                raise ApiError(400, "0x8004F703", "Lock Status cannot be specified for a dynamic list.")

    def _check_unique_name(self, table: Table, row: dict[str, Any]) -> None:
        name = str(row.get("uniquename") or "").lower()
        for other in self.store.data(table.logical_name).rows.values():
            if other[table.primary_id] != row[table.primary_id] and str(other.get("uniquename")).lower() == name:
                raise ApiError(
                    412,
                    "0x80040237",
                    f"A {table.logical_name} with the unique name '{row['uniquename']}' already exists.",
                )  # text unverified

    # ---- solutions ------------------------------------------------------------------------------
    def _prefixes(self) -> list[str]:
        """The customization prefixes of the publishers there are: the setting's and the publishers table's."""
        rows = self.store.data("publisher").rows.values()
        return [*self.settings["publisherPrefixes"], *(str(r.get("customizationprefix")) for r in rows)]

    def _solution(self, request: Request) -> tuple[str, str | None]:
        """(unique name, its publisher's prefix) of the ``MSCRM.SolutionUniqueName`` header; ("Default", None)
        without one: the component then lands in the default solution only."""
        name = (request.header("MSCRM.SolutionUniqueName") or "").strip()
        if not name:
            return "Default", None
        solution = next(
            (r for r in self.store.data("solution").rows.values() if str(r.get("uniquename")).lower() == name.lower()),
            None,
        )
        if solution is None:
            raise ApiError(404, "0x8004a101", f"No solution with the unique name '{name}' was found.")  # unverified
        if solution.get("ismanaged"):
            raise ApiError(400, "0x80048033", f"Components cannot be added to the managed solution '{name}'.")  # unv.
        publisher = self.store.data("publisher").rows.get(solution.get("_publisherid_value") or "")
        return str(solution["uniquename"]), str((publisher or {}).get("customizationprefix") or "") or None

    @staticmethod
    def _check_prefix(schema_name: str, solution: str, prefix: str | None) -> None:
        """A component created in a solution carries its publisher's customization prefix."""
        if prefix is None:
            return
        own = schema_name.split("_", 1)[0].lower()
        if own != prefix.lower():
            raise ApiError(
                400,
                "0x80048403",
                f"The schema name '{schema_name}' does not begin with the customization prefix '{prefix}_' of the "
                f"publisher of solution '{solution}'.",
            )  # text unverified

    def _component(self, solution: str, kind: str, name: str, table: str) -> None:
        self.components.append({"solution": solution, "type": kind, "name": name, "table": table})

    def _check_view(self, row: dict[str, Any]) -> None:
        """A system view needs a name, the table it returns and FetchXML over that table."""
        for name in ("name", "returnedtypecode", "fetchxml"):
            if not row.get(name):
                raise ApiError(400, "0x80040203", f"Attribute '{name}' is required for savedquery.")  # unverified
        if row["returnedtypecode"] not in self.tables:
            raise ApiError(
                400, "0x80040203", f"'{row['returnedtypecode']}' is not a valid entity name for returnedtypecode."
            )  # text unverified
        plan = compile_fetch(row["fetchxml"], self.tables.get)  # a FetchXML error answers 400 like a query's
        if plan.entity != row["returnedtypecode"]:
            raise ApiError(
                400,
                "0x80040203",
                f"The view's fetchxml queries '{plan.entity}', not its returnedtypecode '{row['returnedtypecode']}'.",
            )  # text unverified

    def _create(self, request: Request) -> Response:
        table = self._set_table(request.params["entityset"])
        if table.is_intersect:
            raise errors.not_implemented(
                f"creating {table.entity_set_name} rows directly; use AddMemberList, "
                "AddListMembersList or the $ref association"
            )
        body = self._body(request)
        prefer = parse_prefer(request)
        user = user_id(caller(request))
        with self.data_lock:
            changes = self._changes(table, body, creating=True)
            record_id = changes.pop(table.primary_id, None) or new_id()
            data = self.store.data(table.logical_name)
            if record_id in data.rows:
                raise errors.duplicate_key()
            row = self._new_row(table, changes, record_id, user)
            self._check_required(table, row)
            if table.logical_name == "savedquery":
                solution, _ = self._solution(request)
                self._component(solution, "SavedQuery", row["name"], row["returnedtypecode"])
            self.store.insert(table.logical_name, row)
            return self._written(request, table, row, prefer, created=True)

    def _written(self, request: Request, table: Table, row: dict[str, Any], prefer: Prefer, created: bool) -> Response:
        entity_url = f"{self._base(request)}/{table.entity_set_name}({row[table.primary_id]})"
        if prefer.representation:
            select = self._select(request, table)
            body = {
                "@odata.context": self._context_url(request, table, select, "/$entity"),
                **project(table, row, select, prefer.annotation_set()),
            }
            headers = {"Preference-Applied": "return=representation", "ETag": etag(row)}
            if created:
                headers["Location"] = entity_url
            return self._json(201 if created else 200, body, headers)
        return Response(204, b"", {"OData-Version": "4.0", "OData-EntityId": entity_url})

    def _patch(self, request: Request) -> Response:
        table = self._set_table(request.params["entityset"])
        if table.is_intersect:
            raise errors.not_implemented(f"updating {table.entity_set_name} rows")
        record_id = self._record_id(table, request.params["key"])
        body = self._body(request)
        prefer = parse_prefer(request)
        if_match = request.header("If-Match")
        if_none_match = request.header("If-None-Match")
        user = user_id(caller(request))
        with self.data_lock:
            data = self.store.data(table.logical_name)
            current = data.rows.get(record_id)
            if current is None:
                if if_match is not None:
                    raise errors.not_found(table.logical_name, record_id)
                changes = self._changes(table, body, creating=True)
                changes.pop(table.primary_id, None)
                row = self._new_row(table, changes, record_id, user)
                self._check_required(table, row)
                self.store.insert(table.logical_name, row)
                return self._written(request, table, row, prefer, created=True)
            if if_none_match == "*":
                raise errors.duplicate_key()
            if if_match not in (None, "*") and if_match != etag(current):
                raise errors.version_mismatch()
            changes = self._changes(table, body, creating=False, current=current)
            self._check_writable(table, current, changes)
            row = self._update(table, current, changes, user)
            return self._written(request, table, row, prefer, created=False)

    def _check_writable(self, table: Table, current: dict[str, Any], changes: dict[str, Any]) -> None:
        state = current.get("statecode")
        reopening = changes.get("statecode") == 0 and set(changes) <= {"statecode", "statuscode"}
        if state in table.read_only_states and not reopening:
            raise errors.read_only_record()
        if state in table.inactive_states and self.settings["inactiveReadOnly"] and not reopening:
            raise errors.inactive_record()

    def _update(self, table: Table, current: dict[str, Any], changes: dict[str, Any], user: str) -> dict[str, Any]:
        row = dict(current)
        row.update(changes)
        row["modifiedon"] = self._now()
        row["_modifiedby_value"] = user
        _compute(table, row)
        return self.store.replace(table.logical_name, row, frozenset(changes))

    def _delete(self, request: Request) -> Response:
        table = self._set_table(request.params["entityset"])
        if table.is_intersect:
            raise errors.not_implemented(f"deleting {table.entity_set_name} rows directly; use the $ref disassociation")
        record_id = self._record_id(table, request.params["key"])
        if_match = request.header("If-Match")
        with self.data_lock:
            current = self.store.data(table.logical_name).rows.get(record_id)
            if current is None:
                raise errors.not_found(table.logical_name, record_id)
            if if_match not in (None, "*") and if_match != etag(current):
                raise errors.version_mismatch()
            self._delete_record(table, record_id)
        return Response(204, b"", {"OData-Version": "4.0"})

    def _delete_record(self, table: Table, record_id: str) -> None:
        """Deletes a record and its list memberships (listmember rows go with either side)."""
        store = self.store
        if table.logical_name == "list":
            for member in list(store.member_ids(record_id)):
                store.remove_member(record_id, member)
        elif table.logical_name in LIST_NAVIGATIONS:
            for list_id in sorted(store.lists_of(record_id)):
                store.remove_member(list_id, record_id)
        self._cascade_delete(table, record_id)
        store.delete(table.logical_name, record_id)

    def _cascade_delete(self, table: Table, record_id: str) -> None:
        """What deleting a referenced record does to the rows whose lookups point at it."""
        for relationship in self.relationships.values():
            if relationship.referenced_entity != table.logical_name or not relationship.is_custom:
                continue
            key = f"_{relationship.referencing_attribute}_value"
            data = self.store.data(relationship.referencing_entity)
            referencing = [row for row in data.rows.values() if row.get(key) == record_id]
            if not referencing:
                continue
            behaviour = relationship.cascade.get("Delete", "RemoveLink")
            if behaviour == "Restrict":
                raise ApiError(
                    400,
                    "0x80040227",
                    f"The record cannot be deleted because it is referenced by "
                    f"{relationship.referencing_entity} records through "
                    f"{relationship.schema_name}.",
                )  # text unverified
            child = self.tables[relationship.referencing_entity]
            for row in referencing:
                if behaviour == "Cascade":
                    self._delete_record(child, row[child.primary_id])
                else:
                    self._update(child, row, {key: None}, row.get("_modifiedby_value") or DYNAMICS_USER)

    # ================================================================================================
    # marketing lists
    # ================================================================================================
    def _list_row(self, list_id: str) -> dict[str, Any]:
        row = self.store.data("list").rows.get(list_id)
        if row is None:
            raise errors.not_found("list", list_id)
        return row

    def _add_member(
        self,
        list_row: dict[str, Any],
        member_table: Table,
        member_id: str,
        user: str,
        duplicate_ok: bool,
        check_list: bool = True,
    ) -> str:
        list_id = list_row["listid"]
        if member_id not in self.store.data(member_table.logical_name).rows:
            raise errors.not_found(member_table.logical_name, member_id)
        if check_list:
            self._check_static(list_row)
            if list_row.get("lockstatus"):
                raise ApiError(
                    400, "0x80040203", "The marketing list is locked: no additional members can be added."
                )  # text unverified
        expected = MEMBER_TYPE_CODES.get(list_row.get("createdfromcode") or 0)
        if expected != member_table.logical_name:
            raise ApiError(
                400,
                "0x80040203",
                f"The member type '{member_table.logical_name}' does not match the "
                f"member type of the marketing list ('{expected}').",
            )  # unverified
        existing = self.store.membership.get((list_id, member_id))
        if existing is not None:
            if duplicate_ok:
                return existing
            raise ApiError(412, "0x80040237", "Cannot insert duplicate key.")  # text unverified
        return self.store.add_member(list_id, member_id, list_row["createdfromcode"], self._now(), user)

    @staticmethod
    def _check_static(list_row: dict[str, Any]) -> None:
        if list_row.get("type"):
            raise ApiError(
                400,
                "0x80040203",
                "Members cannot be added to or removed from a dynamic marketing list; its members come from its query.",
            )  # text unverified

    def _membership_target(self, request: Request, other: str | None) -> tuple[dict[str, Any], Table, str]:
        """(list row, member table, member id) for a $ref request made from either side."""
        table, navigation, record_id = self._navigation(request)
        if other is None:
            raise ApiError(400, "0x80060888", "The related record is missing: give '@odata.id'.")  # unverified
        other_table, other_id = self._reference(other)
        if other_table.logical_name != navigation.target:
            raise ApiError(
                400,
                "0x80060888",
                f"The entity set '{other_table.entity_set_name}' does not match the "
                f"navigation property '{request.params['nav']}'.",
            )  # text unverified
        if table.logical_name == "list":
            return self._list_row(record_id), other_table, other_id
        if record_id not in self.store.data(table.logical_name).rows:
            raise errors.not_found(table.logical_name, record_id)
        return self._list_row(other_id), table, record_id

    def _associate(self, request: Request) -> Response:
        body = self._body(request)
        reference = body.get("@odata.id")
        user = user_id(caller(request))
        with self.data_lock:
            list_row, member_table, member_id = self._membership_target(
                request, reference if isinstance(reference, str) else None
            )
            self._add_member(list_row, member_table, member_id, user, duplicate_ok=False)
        return Response(204, b"", {"OData-Version": "4.0"})

    def _disassociate(self, request: Request) -> Response:
        table = self._set_table(request.params["entityset"])
        related = request.params.get("related")
        if related is not None:
            navigation = table.navigations.get(request.params["nav"])
            target = self.tables[navigation.target].entity_set_name if navigation else "unknown"
            reference: str | None = f"{target}({unquote(related)})"
        else:
            reference = request.arg("$id")
        with self.data_lock:
            list_row, _, member_id = self._membership_target(request, reference)
            self._check_static(list_row)
            if not self.store.is_member(list_row["listid"], member_id):
                raise ApiError(400, "0x80048458", "Specified Item not a member of the specified List.")
            self.store.remove_member(list_row["listid"], member_id)
        return Response(204, b"", {"OData-Version": "4.0"})

    def _member_list_action(self, request: Request, action: str) -> tuple[str, str]:
        """(list id, EntityId) of a bound list action such as AddMemberList."""
        table = self._set_table(request.params["entityset"])
        if table.logical_name != "list":
            raise errors.segment_not_found(f"Microsoft.Dynamics.CRM.{action}")
        list_id = self._record_id(table, request.params["key"])
        body = self._body(request)
        entity_id = parse_guid(body.get("EntityId")) if isinstance(body.get("EntityId"), str) else None
        if entity_id is None:
            raise ApiError(400, "0x80060888", "The parameter 'EntityId' must be a GUID.")  # text unverified
        return list_id, entity_id

    def _add_member_list(self, request: Request) -> Response:
        list_id, entity_id = self._member_list_action(request, "AddMemberList")
        user = user_id(caller(request))
        with self.data_lock:
            list_row = self._list_row(list_id)
            member_type = MEMBER_TYPE_CODES.get(list_row.get("createdfromcode") or 0, "contact")
            member_id = self._add_member(list_row, self.tables[member_type], entity_id, user, duplicate_ok=True)
        return self._json(
            200,
            {
                "@odata.context": f"{self._base(request)}/$metadata#Microsoft.Dynamics.CRM.AddMemberListResponse",
                "Id": member_id,
            },
        )

    def _remove_member_list(self, request: Request) -> Response:
        """RemoveMemberList, the bound action of an environment with Dynamics 365 apps: ``EntityId`` is the member
        record's id (or the list member's id, as older SDKs documented it); no return value."""
        list_id, entity_id = self._member_list_action(request, "RemoveMemberList")
        with self.data_lock:
            list_row = self._list_row(list_id)
            self._check_static(list_row)
            member_id = next(
                (
                    member
                    for (listed, member), row_id in self.store.membership.items()
                    if listed == list_row["listid"] and entity_id in (member, row_id)
                ),
                None,
            )
            if member_id is None:
                raise ApiError(400, "0x80048458", "Specified Item not a member of the specified List.")
            self.store.remove_member(list_row["listid"], member_id)
        return Response(204, b"", {"OData-Version": "4.0"})

    def _add_list_members(self, request: Request) -> Response:
        body = self._body(request)
        target, members = body.get("List"), body.get("Members")
        if not isinstance(target, dict) or not isinstance(members, list):
            raise ApiError(
                400,
                "0x80060888",
                "AddListMembersList needs 'List' (a list entity) and 'Members' (a collection of entities).",
            )  # text unverified
        user = user_id(caller(request))
        with self.data_lock:
            list_id = target.get("listid")
            if not isinstance(list_id, str) and isinstance(target.get("@odata.id"), str):
                list_id = self._reference(target["@odata.id"])[1]
            list_guid = parse_guid(list_id) if isinstance(list_id, str) else None
            if list_guid is None:
                raise ApiError(400, "0x80060888", "The 'List' parameter needs a 'listid'.")  # text unverified
            list_row = self._list_row(list_guid)
            resolved: list[tuple[Table, str]] = []
            for member in members:
                resolved.append(self._typed_member(member))
            self._check_static(list_row)
            if list_row.get("lockstatus"):
                raise ApiError(
                    400, "0x80040203", "The marketing list is locked: no additional members can be added."
                )  # text unverified
            self.store.begin()
            try:
                for member_table, member_id in resolved:
                    self._add_member(list_row, member_table, member_id, user, duplicate_ok=True, check_list=False)
            except ApiError:
                self.store.rollback()
                raise
            self.store.commit()
        return Response(204, b"", {"OData-Version": "4.0"})

    def _typed_member(self, member: Any) -> tuple[Table, str]:
        if not isinstance(member, dict):
            raise ApiError(400, "0x80060888", "Each member must be an entity object.")  # text unverified
        if isinstance(member.get("@odata.id"), str):
            return self._reference(member["@odata.id"])
        odata_type = str(member.get("@odata.type") or "")
        table = self.tables.get(odata_type.rsplit(".", 1)[-1].lstrip("#"))
        if table is None:
            raise ApiError(
                400,
                "0x80060888",
                "Each member needs '@odata.type' (for example 'Microsoft.Dynamics.CRM.contact') and its key.",
            )  # text unverified
        member_id = member.get(table.primary_id)
        guid = parse_guid(member_id) if isinstance(member_id, str) else None
        if guid is None:
            raise ApiError(400, "0x80060888", f"The member has no valid '{table.primary_id}'.")  # text unverified
        return table, guid

    # ================================================================================================
    # metadata
    # ================================================================================================
    _METADATA_PATH = re.compile(
        r"^(?:\((?P<entity>[^)]*)\)(?:/(?P<part>Attributes)(?:\((?P<attribute>[^)]*)\))?"
        r"(?:/(?P<cast>Microsoft\.Dynamics\.CRM\.\w+))?)?)?$"
    )

    def _metadata(self, request: Request) -> Response:
        rest = unquote(request.params.get("rest", ""))
        found = self._METADATA_PATH.match(rest)
        if not found:
            segment = rest.strip("/").split("/")[-1].split("(")[0] or "EntityDefinitions"
            if segment in ("Keys", "ManyToManyRelationships", "OneToManyRelationships", "ManyToOneRelationships"):
                raise errors.not_implemented(f"EntityDefinitions/{segment}")
            raise errors.segment_not_found(segment)
        method = request.method
        with self.data_lock:
            if found.group("entity") is None:
                if method == "GET":
                    return self._list_entities(request)
                if method == "POST":
                    return self._create_entity(request)
                raise _method_not_allowed(method)
            table = self._metadata_table(found.group("entity"))
            if found.group("part") is None:
                if method == "GET":
                    return self._get_entity(request, table)
                if method in ("PUT", "PATCH", "DELETE"):
                    raise errors.not_implemented(f"{method} on EntityDefinitions")
                raise _method_not_allowed(method)
            if found.group("attribute") is None:
                if found.group("cast") and method != "GET":
                    raise _method_not_allowed(method)
                if method == "GET":
                    return self._list_attributes(request, table, found.group("cast"))
                if method == "POST":
                    return self._create_attribute(request, table)
                raise _method_not_allowed(method)
            attribute = self._metadata_attribute(table, found.group("attribute"))
            if method != "GET":
                raise errors.not_implemented(f"{method} on attribute definitions")
            return self._get_attribute(request, table, attribute, found.group("cast"))

    def _metadata_table(self, key: str) -> Table:
        named = re.match(r"^LogicalName='([^']*)'$", key.strip())
        if named:
            table = self.tables.get(named.group(1))
            if table is None:
                raise ApiError(
                    404, "0x80040217", f"Could not find entity with logical name '{named.group(1)}'."
                )  # text unverified
            return table
        guid = parse_guid(key)
        for table in self.tables.values():
            if guid is not None and table.metadata_id == guid:
                return table
        raise ApiError(404, "0x80040217", f"Could not find entity with id '{key}'.")  # text unverified

    @staticmethod
    def _metadata_attribute(table: Table, key: str) -> Any:
        named = re.match(r"^LogicalName='([^']*)'$", key.strip())
        guid = parse_guid(key)
        for attribute in table.attributes.values():
            if (named and attribute.logical_name == named.group(1)) or (guid and attribute.metadata_id == guid):
                return attribute
        name = named.group(1) if named else key
        raise ApiError(
            404, "0x80040217", f"Could not find attribute '{name}' on entity '{table.logical_name}'."
        )  # text unverified

    @staticmethod
    def _metadata_select(request: Request, allowed: frozenset[str], type_name: str) -> list[str] | None:
        return _names(request.arg("$select"), allowed, type_name)

    @staticmethod
    def _pick(body: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
        if select is None:
            return body
        picked = {name: body.get(name) for name in select}
        picked["MetadataId"] = body["MetadataId"]
        return picked

    def _list_entities(self, request: Request) -> Response:
        select = self._metadata_select(request, ENTITY_METADATA_PROPERTIES, "EntityMetadata")
        test = _metadata_filter(request.arg("$filter"), ENTITY_METADATA_PROPERTIES, "EntityMetadata")
        expand = _parse_expand(request.arg("$expand"))
        items = []
        for table in self.tables.values():
            body = entity_metadata(table)
            if test(body):
                items.append(self._expanded(table, self._pick(body, select), expand))
        columns = f"({','.join(select)})" if select else ""
        return self._json(
            200, {"@odata.context": f"{self._base(request)}/$metadata#EntityDefinitions{columns}", "value": items}
        )

    def _get_entity(self, request: Request, table: Table) -> Response:
        select = self._metadata_select(request, ENTITY_METADATA_PROPERTIES, "EntityMetadata")
        body = self._expanded(table, self._pick(entity_metadata(table), select), _parse_expand(request.arg("$expand")))
        columns = f"({','.join(select)})" if select else ""
        return self._json(
            200, {"@odata.context": f"{self._base(request)}/$metadata#EntityDefinitions{columns}/$entity", **body}
        )

    def _expanded(self, table: Table, body: dict[str, Any], expand: list[tuple[str, dict[str, str]]]) -> dict[str, Any]:
        """``body`` with the ``$expand``ed navigation properties of EntityMetadata: Attributes (``$select``,
        ``$filter``) and Keys (always empty: alternate keys are not reproduced); the others answer 501."""
        for name, options in expand:
            if name in _UNREPRODUCED_EXPANSIONS:
                raise errors.not_implemented(f"$expand={name} on EntityDefinitions")
            if name not in ("Attributes", "Keys"):
                raise errors.unknown_property(name, "EntityMetadata")
            unsupported = sorted(set(options) - {"$select", "$filter"})
            if unsupported:
                raise errors.not_implemented(f"{', '.join(unsupported)} inside $expand={name}")
            if name == "Keys":
                _names(options.get("$select"), KEY_METADATA_PROPERTIES, "EntityKeyMetadata")
                _metadata_filter(options.get("$filter"), KEY_METADATA_PROPERTIES, "EntityKeyMetadata")
                body["Keys"] = []
                continue
            select = _names(options.get("$select"), ATTRIBUTE_METADATA_PROPERTIES, "AttributeMetadata")
            test = _metadata_filter(options.get("$filter"), ATTRIBUTE_METADATA_PROPERTIES, "AttributeMetadata")
            body["Attributes"] = [
                self._pick_attribute(item, select)
                for item in (attribute_metadata(table, a) for a in table.attributes.values())
                if test(item)
            ]
        return body

    @classmethod
    def _pick_attribute(cls, body: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
        """An attribute as a polymorphic collection answers it: its derived type always named."""
        return {"@odata.type": body["@odata.type"], **cls._pick(body, select)} if select is not None else body

    @staticmethod
    def _cast_properties(cast: str) -> tuple[str, frozenset[str]]:
        """(derived type name, the properties ``$select`` may name) of an attribute cast segment."""
        type_name = cast.rsplit(".", 1)[-1]
        extra = TYPED_ATTRIBUTE_PROPERTIES.get(type_name)
        if extra is None:
            raise errors.not_implemented(f"the attribute cast {cast} (no column of that type is reproduced)")
        return type_name, ATTRIBUTE_METADATA_PROPERTIES | extra

    def _list_attributes(self, request: Request, table: Table, cast: str | None = None) -> Response:
        type_name, allowed = (
            self._cast_properties(cast) if cast else ("AttributeMetadata", ATTRIBUTE_METADATA_PROPERTIES)
        )
        select = self._metadata_select(request, allowed - {"OptionSet"}, type_name)
        test = _metadata_filter(request.arg("$filter"), allowed - {"OptionSet"}, type_name)
        with_options = self._options_expansion(request, cast, type_name, allowed)
        items = []
        for attribute in table.attributes.values():
            if cast and attribute_cast_type(attribute) != type_name:
                continue
            body = attribute_metadata(table, attribute, with_options)
            if test(body):
                picked = self._pick_attribute(body, select)
                if with_options:
                    picked["OptionSet"] = attribute_metadata(table, attribute, True).get("OptionSet")
                items.append(picked)
        suffix = f"/{cast}" if cast else ""
        context = f"{self._base(request)}/$metadata#EntityDefinitions('{table.metadata_id}')/Attributes{suffix}"
        return self._json(200, {"@odata.context": context, "value": items})

    @staticmethod
    def _options_expansion(request: Request, cast: str | None, type_name: str, allowed: frozenset[str]) -> bool:
        """Whether ``$expand=OptionSet`` was asked; only a cast to a type with options has it."""
        expand = _parse_expand(request.arg("$expand"))
        for name, options in expand:
            if name == "GlobalOptionSet" and cast is not None:
                raise errors.not_implemented("$expand=GlobalOptionSet (global option sets are not reproduced)")
            if name != "OptionSet" or "OptionSet" not in allowed:
                raise errors.unknown_property(name, type_name)
            if options:
                raise errors.not_implemented(f"{', '.join(sorted(options))} inside $expand=OptionSet")
        return bool(expand)

    def _get_attribute(self, request: Request, table: Table, attribute: Any, cast: str | None) -> Response:
        type_name, allowed = (
            self._cast_properties(cast) if cast else ("AttributeMetadata", ATTRIBUTE_METADATA_PROPERTIES)
        )
        if cast is not None and attribute_cast_type(attribute) != type_name:
            raise ApiError(
                400, "0x80060888", f"The attribute '{attribute.logical_name}' is not of type '{cast}'."
            )  # text unverified
        with_options = self._options_expansion(request, cast, type_name, allowed)
        select = self._metadata_select(request, allowed - {"OptionSet"}, type_name)
        body = self._pick(attribute_metadata(table, attribute, with_options), select)
        if with_options and "OptionSet" not in body:
            body["OptionSet"] = attribute_metadata(table, attribute, True).get("OptionSet")
        return self._json(
            200,
            {
                "@odata.context": f"{self._base(request)}/$metadata#EntityDefinitions("
                f"'{table.metadata_id}')/Attributes/$entity",
                **body,
            },
        )

    def _create_attribute(self, request: Request, table: Table) -> Response:
        solution, prefix = self._solution(request)
        attribute = attribute_from_metadata(self._body(request), self._prefixes())
        self._check_prefix(attribute.schema_name, solution, prefix)
        clash = next(
            (
                a
                for a in table.attributes.values()
                if a.logical_name == attribute.logical_name or a.schema_name.lower() == attribute.schema_name.lower()
            ),
            None,
        )
        if clash is not None:
            raise ApiError(
                400, "0x80047013", f"Attribute {attribute.schema_name} already exists for entity {table.logical_name}."
            )
        table.add_attribute(attribute)
        self._component(solution, "Attribute", attribute.logical_name, table.logical_name)
        self.defaults.pop(table.logical_name, None)
        if attribute.default is not None:
            for row in self.store.data(table.logical_name).rows.values():
                row.setdefault(attribute.row_key, attribute.default)
        self.store.mutations += 1
        entity_id = f"{self._base(request)}/EntityDefinitions({table.metadata_id})/Attributes({attribute.metadata_id})"
        return Response(204, b"", {"OData-Version": "4.0", "OData-EntityId": entity_id})

    def _create_entity(self, request: Request) -> Response:
        solution, prefix = self._solution(request)
        table = table_from_metadata(self._body(request), self._prefixes(), self.next_object_type_code)
        self._check_prefix(table.schema_name, solution, prefix)
        for attribute in table.attributes.values():
            if attribute.is_custom:
                self._check_prefix(attribute.schema_name, solution, prefix)
        if table.logical_name in self.tables or table.entity_set_name in self.sets:
            raise ApiError(400, "0x80047010", "An object with the specified name already exists")
        self._component(solution, "Entity", table.logical_name, table.logical_name)
        self.next_object_type_code += 1
        self._register_table(table)
        self.store.add_table(table)
        self.plugins.table_added(table)
        return Response(
            204,
            b"",
            {"OData-Version": "4.0", "OData-EntityId": f"{self._base(request)}/EntityDefinitions({table.metadata_id})"},
        )

    # ---- relationships ------------------------------------------------------------------------------
    _RELATIONSHIP_PATH = re.compile(r"^(?:\((?P<key>[^)]*)\)(?:/(?P<cast>Microsoft\.Dynamics\.CRM\.\w+))?)?$")

    def _relationship_definitions(self, request: Request) -> Response:
        rest = unquote(request.params.get("rest", ""))
        found = self._RELATIONSHIP_PATH.match(rest)
        if not found:
            raise errors.segment_not_found(rest.strip("/").split("/")[-1].split("(")[0] or "RelationshipDefinitions")
        method = request.method
        with self.data_lock:
            if found.group("key") is None:
                if found.group("cast"):
                    raise errors.not_implemented("casts on the RelationshipDefinitions collection")
                if method == "GET":
                    return self._list_relationships(request)
                if method == "POST":
                    return self._create_relationship(request)
                raise _method_not_allowed(method)
            relationship = self._relationship(found.group("key"))
            if method != "GET":
                raise errors.not_implemented(f"{method} on RelationshipDefinitions")
            body = relationship_metadata(relationship)
            cast = found.group("cast")
            if cast is not None and cast != body["@odata.type"].lstrip("#"):
                raise ApiError(
                    400, "0x80060888", f"The relationship '{relationship.schema_name}' is not of type '{cast}'."
                )  # text unverified
            select = self._metadata_select(request, RELATIONSHIP_METADATA_PROPERTIES, "RelationshipMetadataBase")
            return self._json(
                200,
                {
                    "@odata.context": f"{self._base(request)}/$metadata#RelationshipDefinitions/$entity",
                    **self._pick(body, select),
                },
            )

    def _relationship(self, key: str) -> Relationship:
        named = re.match(r"^SchemaName='([^']*)'$", key.strip())
        guid = parse_guid(key)
        for relationship in self.relationships.values():
            if (named and relationship.schema_name == named.group(1)) or (guid and relationship.metadata_id == guid):
                return relationship
        raise ApiError(
            404,
            "0x80040217",
            f"Could not find relationship with {'SchemaName' if named else 'id'} '{named.group(1) if named else key}'.",
        )
        # text unverified

    def _list_relationships(self, request: Request) -> Response:
        select = self._metadata_select(request, RELATIONSHIP_METADATA_PROPERTIES, "RelationshipMetadataBase")
        test = _metadata_filter(request.arg("$filter"), RELATIONSHIP_METADATA_PROPERTIES, "RelationshipMetadataBase")
        items = [
            self._pick(body, select) for body in map(relationship_metadata, self.relationships.values()) if test(body)
        ]
        columns = f"({','.join(select)})" if select else ""
        return self._json(
            200, {"@odata.context": f"{self._base(request)}/$metadata#RelationshipDefinitions{columns}", "value": items}
        )

    def _create_relationship(self, request: Request) -> Response:
        body = self._body(request)
        if metadata_type(body) == MANY_TO_MANY:
            raise errors.not_implemented("many-to-many relationships")
        solution, prefix = self._solution(request)
        relationship, lookup = relationship_from_metadata(body, self._prefixes(), self.tables.get)
        self._check_prefix(relationship.schema_name, solution, prefix)
        self._check_prefix(lookup.schema_name, solution, prefix)
        if any(r.schema_name.lower() == relationship.schema_name.lower() for r in self.relationships.values()):
            raise ApiError(
                400, "0x80047010", f"A relationship with the name '{relationship.schema_name}' already exists."
            )  # text unverified
        referencing = self.tables[relationship.referencing_entity]
        referenced = self.tables[relationship.referenced_entity]
        clash = next(
            (
                a
                for a in referencing.attributes.values()
                if a.logical_name == lookup.logical_name or a.schema_name.lower() == lookup.schema_name.lower()
            ),
            None,
        )
        if clash is not None:
            raise ApiError(
                400,
                "0x80047013",
                f"Attribute {lookup.schema_name} already exists for entity {referencing.logical_name}.",
            )
        binding = f"{relationship.referencing_navigation}@odata.bind"
        if binding in referencing.bindings or relationship.referenced_navigation in referenced.navigations:
            raise ApiError(400, "0x80047010", "A navigation property of this relationship already exists.")  # unver.
        referencing.add_attribute(lookup)
        referencing.bindings[binding] = (lookup.logical_name, referenced.logical_name)
        self.relationships[relationship.schema_name] = relationship
        self._component(solution, "Relationship", relationship.schema_name, referencing.logical_name)
        self._component(solution, "Attribute", lookup.logical_name, referencing.logical_name)
        self.defaults.pop(referencing.logical_name, None)
        self.store.mutations += 1
        return Response(
            204,
            b"",
            {
                "OData-Version": "4.0",
                "OData-EntityId": f"{self._base(request)}/RelationshipDefinitions({relationship.metadata_id})",
            },
        )

    # ================================================================================================
    # $batch
    # ================================================================================================
    def _batch(self, request: Request) -> Response:
        items = batch.parse(request.body, request.header("Content-Type"))
        prefer = parse_prefer(request)
        content_ids: dict[str, str] = {}
        answers: list[batch.PartResponse | list[batch.PartResponse]] = []
        status = 200
        for item in items:
            failed: batch.PartResponse | None = None
            if isinstance(item, batch.ChangeSet):
                with self.data_lock:
                    self.store.begin()
                    declared = set(content_ids)
                    responses = []
                    for operation in item.operations:
                        response = self._run_operation(operation, request, content_ids)
                        responses.append(response)
                        if response.status >= 400:
                            failed = response
                            break
                    if failed is not None:
                        self.store.rollback()
                        for content_id in set(content_ids) - declared:
                            del content_ids[content_id]
                        answers.append(failed)
                    else:
                        self.store.commit()
                        answers.append(responses)
            else:
                response = self._run_operation(item, request, content_ids)
                answers.append(response)
                failed = response if response.status >= 400 else None
            if failed is not None and not prefer.continue_on_error:
                status = failed.status
                break
        body, content_type = batch.build(answers)
        headers = {"Content-Type": content_type, "OData-Version": "4.0"}
        if prefer.continue_on_error:
            headers["Preference-Applied"] = "odata.continue-on-error"
        return Response(status, body, headers)

    def _run_operation(
        self, operation: batch.Operation, outer: Request, content_ids: dict[str, str]
    ) -> batch.PartResponse:
        def answer(response: Response) -> batch.PartResponse:
            headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
            if operation.content_id is not None and "OData-EntityId" in headers:
                content_ids[operation.content_id] = headers["OData-EntityId"]
            return batch.PartResponse(response.status, headers, response.body, operation.content_id)

        url = operation.url
        reference = re.match(r"^\$([A-Za-z0-9_.-]+)(.*)$", url)
        if reference:
            if reference.group(1) not in content_ids:
                return answer(
                    self.api_error(
                        ApiError(
                            400,
                            "0x80060888",
                            f"Content-ID Reference: '${reference.group(1)}' does not exist in the batch context.",
                        )
                    )
                )
            url = content_ids[reference.group(1)] + reference.group(2)
        parts = urlsplit(url)
        path = parts.path if parts.path.startswith("/") else f"{BASE}/{parts.path}"
        body = operation.body
        if body and content_ids:
            try:
                body = json.dumps(_resolve_references(json.loads(body), content_ids)).encode()
            except ValueError:
                pass
            except KeyError as exc:
                return answer(
                    self.api_error(
                        ApiError(
                            400,
                            "0x80060888",
                            f"Content-ID Reference: '{exc.args[0]}' does not exist in the batch context.",
                        )
                    )
                )
        headers = Message()
        for name, value in operation.headers.items():
            headers[name] = value
        for name in ("Host", "Authorization"):
            if outer.header(name) and name not in headers:
                headers[name] = outer.header(name)
        inner = Request(
            operation.method, path, parse_qs(parts.query, keep_blank_values=True), headers, body, raw_query=parts.query
        )
        route, params, allowed = self.router.match(inner.method, path)
        if route is None:
            return answer(self.error(405 if allowed else 404, f"Resource not found for {path}", inner))
        inner.params = params
        self.latency.note_part(inner.method)
        with self.lock:
            self.batch_parts[route.name] += 1
            self.requests.append(
                {
                    "method": inner.method,
                    "route": route.template,
                    "path": path,
                    "query": inner.query,
                    "body": _decoded(body),
                    "inBatch": True,
                }
            )
        return answer(route.handler(inner))

    # ================================================================================================
    # admin
    # ================================================================================================
    def _register_admin_routes(self) -> None:
        add = self.admin.add
        add("POST", "/_admin/edit", lambda r: self._admin_edit(r.json()))
        add("POST", "/_admin/delete", lambda r: self._admin_delete(r.json()))
        add("POST", "/_admin/qualify-lead", lambda r: self._admin_qualify(r.json()))
        add("POST", "/_admin/members", lambda r: self._admin_members(r.json()))
        add("GET", "/_admin/stats", lambda r: Response.json(200, {"rowsExamined": self.rows_examined}))
        add("GET", "/_admin/throttling", lambda r: Response.json(200, self.protection.limits.to_json()))
        add("POST", "/_admin/throttling", self._admin_throttling)
        add("GET", "/_admin/settings", lambda r: Response.json(200, self.settings))
        add("POST", "/_admin/settings", lambda r: self._admin_settings(r.json()))
        add(
            "GET",
            "/_admin/batch-parts",
            lambda r: Response.json(200, {"parts": dict(self.batch_parts), "total": sum(self.batch_parts.values())}),
        )
        add(
            "GET",
            "/_admin/bulk-targets",
            lambda r: Response.json(
                200, {"targets": dict(self.bulk_targets), "total": sum(self.bulk_targets.values())}
            ),
        )

    def latency_configured(self) -> None:
        self.protection.scale = self.latency.time_scale if self.latency.enabled else 1.0  # limits follow the model

    def _admin_throttling(self, request: Request) -> Response:
        self.protection.configure(request.json())
        return Response.json(200, self.protection.limits.to_json())

    def _admin_settings(self, body: Any) -> Response:
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object of settings")
        unknown = set(body) - set(self.settings)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(self.settings)}")
        if "publisherPrefixes" in body and not (
            isinstance(body["publisherPrefixes"], list)
            and all(isinstance(p, str) and re.match(r"^[a-z][a-z0-9]{1,7}$", p) for p in body["publisherPrefixes"])
        ):
            raise ValueError("publisherPrefixes must be a list of 2 to 8 lower-case letters or digits")
        with self.data_lock:
            self.settings.update(body)
        return Response.json(200, self.settings)

    def _seed_row(self, table: Table, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise ValueError(f"each {table.entity_set_name} row must be a JSON object")
        row = dict(self._table_defaults(table))
        now = self._now()
        row["createdon"] = row["modifiedon"] = now
        row["_createdby_value"] = row["_modifiedby_value"] = DYNAMICS_USER
        for key, value in item.items():
            attribute = table.by_row_key(key) or table.attributes.get(key)
            if attribute is None or key == "versionnumber":
                raise ValueError(f"{table.entity_set_name} has no seedable column {key!r}")
            if attribute.type == LOOKUP:
                row[attribute.row_key] = parse_guid(value) if isinstance(value, str) else None
                continue
            try:
                row[key] = convert(table, attribute, value)
            except ApiError as exc:
                raise ValueError(f"{table.entity_set_name}.{key}: {exc.message}") from exc
        row[table.primary_id] = row.get(table.primary_id) or new_id()
        if "statecode" in item and "statuscode" not in item and "statuscode" in table.attributes:
            row["statuscode"] = table.default_status(row["statecode"])
        _compute(table, row)
        return row

    def admin_seed(self, body: Any) -> Response:
        if not isinstance(body, dict):
            raise ValueError('expected {"contacts": [...], "leads": [...], "accounts": [...], "lists": [...]}')
        counts: dict[str, int] = {}
        with self.data_lock:
            for name, items in body.items():
                if name == "lists":
                    continue
                table = self.sets.get(name)
                if table is None or table.is_intersect or not isinstance(items, list):
                    raise ValueError(
                        f"cannot seed {name!r}: give a list of rows for one of "
                        f"{sorted(n for n, t in self.sets.items() if not t.is_intersect)}"
                    )
                rows = [self._seed_row(table, item) for item in items]
                self.store.bulk_insert(table.logical_name, rows)
                counts[name] = len(rows)
            for item in body.get("lists") or []:
                if not isinstance(item, dict):
                    raise ValueError("each list must be a JSON object")
                members = item.get("members") or []
                fields = {k: v for k, v in item.items() if k != "members"}
                row = self._seed_row(self.tables["list"], fields)
                row["membertype"] = row.get("createdfromcode")
                if row.get("createdfromcode") not in MEMBER_TYPE_CODES:
                    raise ValueError("each list needs createdfromcode 1 (account), 2 (contact) or 4 (lead)")
                self.store.bulk_insert("list", [row])
                member_table = MEMBER_TYPE_CODES[row["createdfromcode"]]
                self._seed_members(row, member_table, members)
                counts["lists"] = counts.get("lists", 0) + 1
                counts["listmembers"] = counts.get("listmembers", 0) + len(members)
        return Response.json(200, {"seeded": counts})

    def _seed_members(self, list_row: dict[str, Any], member_table: str, members: list[Any]) -> None:
        store, list_id = self.store, list_row["listid"]
        rows = store.data(member_table).rows
        now = self._now()
        new_rows = []
        ids = []
        for member in members:
            member_id = parse_guid(member) if isinstance(member, str) else None
            if member_id is None or member_id not in rows:
                raise ValueError(f"list {list_id}: member {member!r} is not a seeded {member_table}")
            if (list_id, member_id) in store.membership:
                continue
            listmember_id = new_id()
            new_rows.append(
                {
                    "listmemberid": listmember_id,
                    "name": None,
                    "_listid_value": list_id,
                    "_entityid_value": member_id,
                    "entitytype": member_table,
                    "entityidtypecode": list_row["createdfromcode"],
                    "createdon": now,
                    "modifiedon": now,
                    "_createdby_value": DYNAMICS_USER,
                    "_modifiedby_value": DYNAMICS_USER,
                }
            )
            store.membership[(list_id, member_id)] = listmember_id
            store.member_lists.setdefault(member_id, set()).add(list_id)
            ids.append(member_id)
        store.bulk_insert("listmember", new_rows)
        store.members[list_id] = sorted(store.members.get(list_id, []) + ids)
        if not list_row.get("type"):  # a dynamic list's members come from its query: no count is kept
            list_row["membercount"] = len(store.members[list_id])

    def admin_state(self, request: Request) -> Response:
        name = request.arg("entity")
        with self.data_lock:
            if name is None:
                return Response.json(
                    200,
                    {
                        "tables": {
                            t.entity_set_name: len(self.store.data(t.logical_name).rows) for t in self.tables.values()
                        },
                        "version": self.store.version,
                        "settings": self.settings,
                        "throttling": self.protection.limits.to_json(),
                        "customTables": [t.logical_name for t in self.tables.values() if t.is_custom],
                        "customColumns": {
                            t.logical_name: [a.logical_name for a in t.attributes.values() if a.is_custom]
                            for t in self.tables.values()
                        },
                        "customRelationships": [r.schema_name for r in self.relationships.values() if r.is_custom],
                        "solutionComponents": self.components,
                    },
                )
            table = self.sets.get(name)
            if table is None:
                raise ValueError(f"unknown entity set {name!r}; known: {sorted(self.sets)}")
            data = self.store.data(table.logical_name)
            wanted = request.arg("id")
            ids = [wanted.lower()] if wanted else data.order
            rows = []
            for row_id in ids:
                row = data.rows.get(row_id)
                if row is None:
                    continue
                out = {k: _plain(v) for k, v in row.items() if "@" not in k}
                if table.logical_name == "list":
                    out["members"] = (
                        self._dynamic_members(row) if row.get("type") else list(self.store.member_ids(row_id))
                    )
                rows.append(out)
        return Response.json(200, {"rows": rows, "count": len(rows)})

    def _dynamic_members(self, list_row: dict[str, Any]) -> list[str]:
        """The ids a dynamic list's query selects today (for tests; the Web API has no such read)."""
        if not list_row.get("query"):
            return []
        plan = compile_fetch(list_row["query"], self.tables.get)
        data = self.store.data(plan.entity)
        context = _Context(self)
        return [i for i in data.order if plan.predicate(data.rows[i], context)]

    def _admin_table(self, body: Any) -> Table:
        if not isinstance(body, dict) or body.get("entity") not in self.sets:
            raise ValueError(f'give "entity": one of {sorted(self.sets)}')
        return self.sets[body["entity"]]

    def _admin_edit(self, body: Any) -> Response:
        """A user editing records in Dynamics: bumps modifiedon and the version, ignores record state."""
        table = self._admin_table(body)
        edits = body.get("edits") or [{"id": body.get("id"), "changes": body.get("changes")}]
        edited = []
        with self.data_lock:
            data = self.store.data(table.logical_name)
            for edit in edits:
                record_id = parse_guid(str(edit.get("id") or ""))
                if record_id is None or record_id not in data.rows:
                    raise ValueError(f"no {table.logical_name} with id {edit.get('id')!r}")
                changes = {}
                for key, value in (edit.get("changes") or {}).items():
                    attribute = table.attributes.get(key)
                    if (
                        attribute is None
                        or attribute.type == LOOKUP
                        or key in ("createdon", "modifiedon", "versionnumber", table.primary_id)
                    ):
                        raise ValueError(f"{table.logical_name} has no editable column {key!r}")
                    try:
                        changes[key] = convert(table, attribute, value)
                    except ApiError as exc:
                        raise ValueError(f"{key}: {exc.message}") from exc
                self._check_state(table, changes, data.rows[record_id])
                row = self._update(table, data.rows[record_id], changes, DYNAMICS_USER)
                edited.append(
                    {"id": record_id, "versionnumber": row["versionnumber"], "modifiedon": _plain(row["modifiedon"])}
                )
        return Response.json(200, {"edited": edited})

    def _admin_delete(self, body: Any) -> Response:
        table = self._admin_table(body)
        ids = body.get("ids") or [body.get("id")]
        with self.data_lock:
            for raw in ids:
                record_id = parse_guid(str(raw or ""))
                if record_id is None or record_id not in self.store.data(table.logical_name).rows:
                    raise ValueError(f"no {table.logical_name} with id {raw!r}")
                self._delete_record(table, record_id)
        return Response.json(200, {"deleted": len(ids)})

    def _admin_qualify(self, body: Any) -> Response:
        table = self.tables["lead"]
        record_id = parse_guid(str(body.get("id") or "")) if isinstance(body, dict) else None
        state = int(body.get("statecode", 1)) if isinstance(body, dict) else 1
        with self.data_lock:
            current = self.store.data("lead").rows.get(record_id or "")
            if current is None:
                raise ValueError(f"no lead with id {body.get('id') if isinstance(body, dict) else None!r}")
            changes: dict[str, Any] = {"statecode": state}
            if isinstance(body, dict) and "statuscode" in body:
                changes["statuscode"] = int(body["statuscode"])
            self._check_state(table, changes, current)
            row = self._update(table, current, changes, DYNAMICS_USER)
        return Response.json(200, {"id": record_id, "statecode": row["statecode"], "statuscode": row["statuscode"]})

    def _admin_members(self, body: Any) -> Response:
        """A user changing a static list's members in Dynamics (lock status is not checked)."""
        if not isinstance(body, dict):
            raise ValueError('expected {"listid": "...", "add": [ids], "remove": [ids]}')
        list_id = parse_guid(str(body.get("listid") or ""))
        with self.data_lock:
            list_row = self.store.data("list").rows.get(list_id or "")
            if list_row is None:
                raise ValueError(f"no list with id {body.get('listid')!r}")
            member_table = self.tables[MEMBER_TYPE_CODES[list_row["createdfromcode"]]]
            try:
                for raw in body.get("add") or []:
                    member_id = parse_guid(str(raw)) or ""
                    self._add_member(
                        list_row, member_table, member_id, DYNAMICS_USER, duplicate_ok=True, check_list=False
                    )
                for raw in body.get("remove") or []:
                    member_id = parse_guid(str(raw)) or ""
                    if self.store.is_member(list_row["listid"], member_id):
                        self.store.remove_member(list_row["listid"], member_id)
            except ApiError as exc:
                raise ValueError(exc.message) from exc
        return Response.json(200, {"members": len(self.store.member_ids(list_row["listid"]))})


# ====================================================================================================
# module helpers
# ====================================================================================================


def caller(request: Request) -> str:
    """The user a request acts as: the token's object id (or subject), or one loopback user."""
    auth = request.header("Authorization") or ""
    if not auth.lower().startswith("bearer "):
        return "loopback"
    token = auth[7:].strip()
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        subject = claims.get("oid") or claims.get("sub")
        if subject:
            return str(subject)
    except (IndexError, ValueError, AttributeError):
        pass
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def user_id(user: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dataverse-emulator/user/{user}"))


def _compute(table: Table, row: dict[str, Any]) -> None:
    """Columns the service computes: fullname and a list's member type."""
    if table.logical_name in ("contact", "lead"):
        row["fullname"] = " ".join(p for p in (row.get("firstname"), row.get("lastname")) if p) or None
    if table.logical_name == "list":
        row["membertype"] = row.get("createdfromcode")
        if row.get("membercount") is None and not row.get("type"):
            row["membercount"] = 0


def _whole_number(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    if not text.strip().isdigit():
        raise ApiError(
            400,
            "0x80060888",
            f"Invalid value '{text}' for {option} query option found. The {option} "
            "query option requires a non-negative integer value.",
        )
    return int(text)


def _method_not_allowed(method: str) -> ApiError:
    return ApiError(405, "0x80060888", f"The requested method {method} is not allowed for this resource.")


def _without_paging(fetch_xml: str) -> str:
    return re.sub(r"""\s(page|paging-cookie|count)=("[^"]*"|'[^']*')""", "", fetch_xml)


def _resolve_references(value: Any, content_ids: dict[str, str]) -> Any:
    """Replaces ``"$1"`` (or ``"$1/..."``) in ``@odata.bind``/``@odata.id`` values with the entity URL."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(item, str) and (key.endswith("@odata.bind") or key == "@odata.id") and item.startswith("$"):
                name, _, rest = item[1:].partition("/")
                if name not in content_ids:
                    raise KeyError(f"${name}")
                out[key] = content_ids[name] + (f"/{rest}" if rest else "")
            else:
                out[key] = _resolve_references(item, content_ids)
        return out
    if isinstance(value, list):
        return [_resolve_references(item, content_ids) for item in value]
    return value


def _decoded(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


_UNREPRODUCED_EXPANSIONS = frozenset(
    {"OneToManyRelationships", "ManyToOneRelationships", "ManyToManyRelationships", "Privileges", "Settings"}
)


def _split_top(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside parentheses and quotes."""
    parts, depth, quoted, current = [], 0, False, []
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == separator and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _parse_expand(text: str | None) -> list[tuple[str, dict[str, str]]]:
    """``Attributes($select=a,b;$filter=x eq 'y'),Keys`` as [(navigation, {option: value})]."""
    items: list[tuple[str, dict[str, str]]] = []
    for part in _split_top(text or "", ","):
        found = re.match(r"^(\w+)\s*(?:\((.*)\))?$", part, re.DOTALL)
        if not found:
            raise ApiError(400, "0x80060888", f"Syntax error in the $expand clause '{part}'.")  # text unverified
        options: dict[str, str] = {}
        for option in _split_top(found.group(2) or "", ";"):
            name, equals, value = option.partition("=")
            if not equals:
                raise ApiError(400, "0x80060888", f"Syntax error in the $expand option '{option}'.")  # unverified
            options[name.strip()] = value.strip()
        items.append((found.group(1), options))
    return items


def _names(text: str | None, allowed: frozenset[str], type_name: str) -> list[str] | None:
    """A ``$select`` list, each name a property of ``type_name``."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in allowed:
            raise errors.unknown_property(name, type_name)
    return names


_FILTER_ITEM = re.compile(r"^\s*\(?\s*([A-Za-z]+)\s+(eq|ne)\s+('(?:[^']|'')*'|true|false|null|-?\d+)\s*\)?\s*$")


def _metadata_filter(text: str | None, allowed: frozenset[str], type_name: str) -> Callable[[dict], bool]:
    """The small ``$filter`` subset metadata queries need: ``Prop eq|ne literal`` joined by and/or."""
    if text is None or not text.strip():
        return lambda body: True
    alternatives = []
    for part in re.split(r"\s+or\s+", text):
        conditions = []
        for item in re.split(r"\s+and\s+", part):
            found = _FILTER_ITEM.match(item)
            if not found:
                raise errors.not_implemented(
                    f"the metadata $filter '{item.strip()}' (only 'Property eq literal' joined by and/or)"
                )
            name, op, literal = found.groups()
            if name not in allowed:
                raise errors.unknown_property(name, type_name)
            value: Any
            if literal.startswith("'"):
                value = literal[1:-1].replace("''", "'")
            else:
                value = {"true": True, "false": False, "null": None}.get(literal)
                if literal.lstrip("-").isdigit():
                    value = int(literal)
            conditions.append((name, op, value))
        alternatives.append(conditions)

    def test(body: dict) -> bool:
        for conditions in alternatives:
            if all((body.get(name) == value) == (op == "eq") for name, op, value in conditions):
                return True
        return False

    return test
