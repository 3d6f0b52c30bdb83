"""Webhook registration and delivery in the Dataverse emulator: ``serviceendpoints``, ``sdkmessages``,
``sdkmessagefilters``, ``sdkmessageprocessingsteps`` and ``asyncoperations``, and the asynchronous service
that POSTs a ``RemoteExecutionContext`` after a matching change.

Longer than 500 lines because the five tables' column definitions are data, kept beside the rules that read them.

Tables, through the Web API like any other (``$select``, ``$filter``, ``Prefer: return=representation``):

- ``serviceendpoints``: ``name``, ``url``, ``contract`` (8 = Webhook; 1-10 as the service numbers them),
  ``authtype`` (4 WebhookKey: ``?code=<authvalue>``; 5 HttpHeader and 6 HttpQueryString: ``authvalue`` is
  ``<settings><setting name="X-Name" value="..." /></settings>``, one header or query parameter per setting),
  ``authvalue`` (write-only: always null when read), ``messageformat`` (2 = Json), ``description``. A webhook
  endpoint needs an absolute http(s) ``url``, an ``authtype`` of 4, 5 or 6 and an ``authvalue`` that parses;
  otherwise 400;
- ``sdkmessages`` (read-only, seeded): Create, Update, Delete, CreateMultiple, UpdateMultiple;
- ``sdkmessagefilters`` (read-only, seeded): one per message and table: Create, Update and Delete on
  contact, lead, account and list; CreateMultiple and UpdateMultiple on contact, lead and account; all five on
  each custom table created through the metadata API. Query them
  as the documentation does: ``$filter=sdkmessageid/name eq 'Update' and primaryobjecttypecode eq 'contact'``
  (``primaryobjecttypecode`` holds the table's logical name; ``_sdkmessageid_value`` the message);
- ``sdkmessageprocessingsteps``: ``name``, ``mode`` (0 synchronous, 1 asynchronous), ``stage`` (10, 20, 40),
  ``rank``, ``supporteddeployment``, ``asyncautodelete``, ``filteringattributes`` (comma-separated),
  ``statecode``/``statuscode`` (0/1 enabled, 1/2 disabled), bound with ``sdkmessageid@odata.bind``,
  ``sdkmessagefilterid@odata.bind`` (its message must be the step's) and
  ``eventhandler_serviceendpoint@odata.bind`` (read back as ``_eventhandler_value``); an asynchronous step
  must be stage 40;
- ``asyncoperations`` (read-only): one per webhook job that failed (``statuscode`` 31 Failed, ``statecode``
  3 Completed, ``errorcode``, ``message``, ``friendlymessage``, ``_owningextensionid_value`` = the step,
  ``primaryentitytype``, ``correlationid``, ``completedon``), and one per success (``statuscode`` 30
  Succeeded) when the step does not have ``asyncautodelete``.

The steps of an endpoint are also read as ``serviceendpoints(<id>)/serviceendpoint_sdkmessageprocessingstep``.

Delivery: after a row of a table is created (message Create) or updated (message Update) by anyone (the
Web API, inside ``$batch`` change sets once they commit, UpdateMultiple/CreateMultiple item by item, or
``/_admin/edit``), every enabled asynchronous stage-40 step on that message and table whose endpoint is a
webhook gets one job, unless it is an Update and ``filteringattributes`` names none of the columns the request
set (empty: any column). The job POSTs the RemoteExecutionContext JSON (``MessageName``, ``PrimaryEntityName``,
``PrimaryEntityId``, ``InitiatingUserId`` and ``UserId`` = the user who made the change: the caller's WhoAmI
UserId for Web API calls, the emulator's Dynamics user for ``/_admin`` edits, ``InputParameters`` with
``Target`` holding the columns the request set (Create: every column with a value), ``OperationCreatedOn``
``/Date(ms+0000)/``, ``OwningExtension`` = the step, ``Stage``, ``Mode``, ``Depth`` 1, ``CorrelationId``,
``OperationId``, ``RequestId``, ``OrganizationId``, ``BusinessUnitId``...) with the headers
``x-ms-dynamics-organization``, ``x-ms-dynamics-entity-name``, ``x-ms-dynamics-request-name``,
``x-ms-correlation-request-id`` and the endpoint's authentication, about one second after the change
(``timeScale`` compresses it), waiting 60 s for an answer; a 502, 503 or 504 is tried once more, any other
failure (or a second one) ends the job as a failed ``asyncoperations`` row. Synchronous steps, steps on
Delete and on the *Multiple messages, and images are stored but never run.
"""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ElementTree
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from emulators.outbox import Delivery, Outbox, Outcome

from .errors import ApiError
from .schema import (
    BIGINT,
    BOOLEAN,
    DATETIME,
    ENTITYNAME,
    GUID,
    INTEGER,
    LOOKUP,
    MEMO,
    PICKLIST,
    STATE,
    STATUS,
    STRING,
    Attribute,
    Navigation,
    Option,
    Table,
)

if TYPE_CHECKING:
    from .server import DataverseEmulator

MESSAGES = ("Create", "Update", "Delete", "CreateMultiple", "UpdateMultiple")
MESSAGE_TABLES = {
    "Create": ("contact", "lead", "account", "list"),
    "Update": ("contact", "lead", "account", "list"),
    "Delete": ("contact", "lead", "account", "list"),
    "CreateMultiple": ("contact", "lead", "account"),
    "UpdateMultiple": ("contact", "lead", "account"),
}
WEBHOOK_CONTRACT = 8
AUTH_WEBHOOK_KEY, AUTH_HEADER, AUTH_QUERY = 4, 5, 6
TIMEOUT_SECONDS = 60.0
PICKUP_SECONDS = 1.0  # the asynchronous service picks a job up shortly after the change
RETRIED_STATUSES = frozenset({502, 503, 504})
FAILED, SUCCEEDED, COMPLETED = 31, 30, 3
SYSTEM_COLUMNS = frozenset({"versionnumber", "modifiedon", "createdon", "_modifiedby_value", "_createdby_value"})
CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
# collection-valued navigations of these tables: the rows whose lookup (row key) points back at the row
REFERENCING = {"serviceendpoint_sdkmessageprocessingstep": "_eventhandler_value"}
PLUGIN_TABLES = ("serviceendpoint", "sdkmessage", "sdkmessagefilter", "sdkmessageprocessingstep", "asyncoperation")


def _id(name: str, label: str) -> Attribute:
    return Attribute(name, GUID, label, valid_for_update=False, required_level="SystemRequired")


def _read_only(name: str, kind: str, label: str, **kw: Any) -> Attribute:
    return Attribute(name, kind, label, valid_for_create=False, valid_for_update=False, **kw)


def _picklist(name: str, label: str, options: list[tuple[int, str]], **kw: Any) -> Attribute:
    return Attribute(name, PICKLIST, label, options=[Option(v, t) for v, t in options], **kw)


def _common() -> list[Attribute]:
    return [
        _read_only("createdon", DATETIME, "Created On"),
        _read_only("modifiedon", DATETIME, "Modified On"),
        _read_only("versionnumber", BIGINT, "Version Number"),
        _read_only("createdby", LOOKUP, "Created By", targets=("systemuser",)),
        _read_only("modifiedby", LOOKUP, "Modified By", targets=("systemuser",)),
    ]


def _table(logical: str, schema: str, entity_set: str, name: str, otc: int, attributes: list[Attribute], **kw: Any):
    by_name = {a.logical_name: a for a in [*attributes, *_common()]}
    by_name[f"{logical}id"].is_primary_id = True
    by_name[name].is_primary_name = True
    return Table(
        logical,
        schema,
        entity_set,
        f"{logical}id",
        name,
        schema,
        f"{schema}s",
        by_name,
        otc,
        ownership="OrganizationOwned",
        change_tracking=False,
        **kw,
    )


def plugin_tables() -> list[Table]:
    endpoint = _table(
        "serviceendpoint",
        "ServiceEndpoint",
        "serviceendpoints",
        "name",
        4618,
        [
            _id("serviceendpointid", "Service Endpoint"),
            Attribute("name", STRING, "Name", max_length=256, required_level="SystemRequired"),
            Attribute("description", MEMO, "Description", max_length=2000),
            Attribute("url", STRING, "Url", max_length=2000),
            _picklist(
                "contract",
                "Contract",
                [
                    (1, "OneWay"),
                    (2, "Queue"),
                    (3, "Rest"),
                    (4, "TwoWay"),
                    (5, "Topic"),
                    (6, "Queue (Persistent)"),
                    (7, "Event Hub"),
                    (8, "Webhook"),
                    (9, "Event Grid"),
                    (10, "Managed Data Lake"),
                ],
                required_level="SystemRequired",
            ),
            _picklist(
                "authtype",
                "Specify Auth Type",
                [
                    (1, "ACS"),
                    (2, "SAS Key"),
                    (3, "SAS Token"),
                    (4, "Webhook Key"),
                    (5, "Http Header"),
                    (6, "Http Query String"),
                    (7, "Connection String"),
                    (8, "Access Key"),
                ],
                required_level="SystemRequired",
            ),
            Attribute("authvalue", STRING, "Authorization Value", max_length=2048),
            _picklist(
                "messageformat", "Content type of the Message", [(1, "Binary XML"), (2, "Json"), (3, "Text XML")]
            ),
            _picklist(
                "userclaim", "User Information Sent to Service Bus", [(1, "None"), (2, "UserId"), (3, "UserInfo")]
            ),
            Attribute("namespaceaddress", STRING, "Namespace Address", max_length=255),
            Attribute("path", STRING, "Path", max_length=160),
        ],
        navigations={
            "serviceendpoint_sdkmessageprocessingstep": Navigation(
                "serviceendpoint_sdkmessageprocessingstep", "sdkmessageprocessingstep"
            )
        },
    )
    message = _table(
        "sdkmessage",
        "SdkMessage",
        "sdkmessages",
        "name",
        4606,
        [
            _id("sdkmessageid", "Sdk Message"),
            _read_only("name", STRING, "Name", max_length=256),
            _read_only("categoryname", STRING, "Category Name", max_length=25),
            _read_only("isprivate", BOOLEAN, "Is Private", options=[Option(0, "No"), Option(1, "Yes")]),
            _read_only("availability", INTEGER, "Availability"),
        ],
    )
    message_filter = _table(
        "sdkmessagefilter",
        "SdkMessageFilter",
        "sdkmessagefilters",
        "name",
        4607,
        [
            _id("sdkmessagefilterid", "Sdk Message Filter"),
            _read_only("name", STRING, "Name", max_length=256),
            _read_only("sdkmessageid", LOOKUP, "Sdk Message", targets=("sdkmessage",)),
            _read_only("primaryobjecttypecode", ENTITYNAME, "Primary Object Type Code"),
            _read_only("secondaryobjecttypecode", ENTITYNAME, "Secondary Object Type Code"),
            _read_only(
                "iscustomprocessingstepallowed",
                BOOLEAN,
                "Custom Processing Step Allowed",
                options=[Option(0, "No"), Option(1, "Yes")],
            ),
            _read_only("availability", INTEGER, "Availability"),
        ],
        bindings={"sdkmessageid@odata.bind": ("sdkmessageid", "sdkmessage")},
    )
    step = _table(
        "sdkmessageprocessingstep",
        "SdkMessageProcessingStep",
        "sdkmessageprocessingsteps",
        "name",
        4608,
        [
            _id("sdkmessageprocessingstepid", "Sdk Message Processing Step"),
            Attribute("name", STRING, "Name", max_length=256, required_level="SystemRequired"),
            Attribute("description", MEMO, "Description", max_length=256),
            _picklist("mode", "Execution Mode", [(0, "Synchronous"), (1, "Asynchronous")], default=0),
            _picklist(
                "stage",
                "Execution Stage",
                [(10, "Pre-validation"), (20, "Pre-operation"), (40, "Post-operation")],
                required_level="SystemRequired",
            ),
            Attribute("rank", INTEGER, "Execution Order", default=1),
            _picklist(
                "supporteddeployment",
                "Deployment",
                [(0, "Server Only"), (1, "Microsoft Dynamics 365 Client for Outlook Only"), (2, "Both")],
                default=0,
            ),
            Attribute(
                "asyncautodelete",
                BOOLEAN,
                "Asynchronous Automatic Delete",
                default=False,
                options=[Option(0, "No"), Option(1, "Yes")],
            ),
            Attribute("filteringattributes", STRING, "Filtering Attributes", max_length=100000),
            Attribute("configuration", MEMO, "Configuration", max_length=1073741823),
            Attribute("sdkmessageid", LOOKUP, "SDK Message", targets=("sdkmessage",), required_level="SystemRequired"),
            Attribute("sdkmessagefilterid", LOOKUP, "Sdk Message Filter", targets=("sdkmessagefilter",)),
            Attribute("eventhandler", LOOKUP, "Event Handler", targets=("serviceendpoint", "plugintype")),
            Attribute("statecode", STATE, "Status", default=0, options=[Option(0, "Enabled"), Option(1, "Disabled")]),
            Attribute(
                "statuscode",
                STATUS,
                "Status Reason",
                default=1,
                options=[Option(1, "Enabled", 0), Option(2, "Disabled", 1)],
            ),
        ],
        bindings={
            "sdkmessageid@odata.bind": ("sdkmessageid", "sdkmessage"),
            "sdkmessagefilterid@odata.bind": ("sdkmessagefilterid", "sdkmessagefilter"),
            "eventhandler_serviceendpoint@odata.bind": ("eventhandler", "serviceendpoint"),
        },
    )
    job = _table(
        "asyncoperation",
        "AsyncOperation",
        "asyncoperations",
        "name",
        4700,
        [
            _id("asyncoperationid", "System Job"),
            _read_only("name", STRING, "System Job Name", max_length=256),
            _read_only("operationtype", PICKLIST, "System Job Type", options=[Option(1, "System Event")]),
            _read_only(
                "statecode",
                STATE,
                "Status",
                options=[Option(0, "Ready"), Option(1, "Suspended"), Option(2, "Locked"), Option(3, "Completed")],
            ),
            _read_only(
                "statuscode",
                STATUS,
                "Status Reason",
                options=[
                    Option(0, "Waiting For Resources", 0),
                    Option(20, "In Progress", 2),
                    Option(30, "Succeeded", 3),
                    Option(31, "Failed", 3),
                    Option(32, "Canceled", 3),
                ],
            ),
            _read_only("message", MEMO, "Message", max_length=1073741823),
            _read_only("friendlymessage", MEMO, "Friendly message", max_length=1073741823),
            _read_only("errorcode", INTEGER, "Error Code"),
            _read_only("primaryentitytype", ENTITYNAME, "Entity Type"),
            _read_only("messagename", STRING, "Message Name", max_length=160),
            _read_only("correlationid", GUID, "Correlation Id"),
            _read_only("completedon", DATETIME, "Completed On"),
            _read_only("retrycount", INTEGER, "Retry Count"),
            _read_only("owningextensionid", LOOKUP, "Owning Extension", targets=("sdkmessageprocessingstep",)),
        ],
    )
    return [endpoint, message, message_filter, step, job]


def parse_settings(authvalue: str) -> list[tuple[str, str]]:
    """``<settings><setting name="X" value="Y" /></settings>`` as (name, value) pairs; ValueError if malformed."""
    try:
        root = ElementTree.fromstring(authvalue)  # noqa: S314 - the emulator's own callers, on loopback
    except ElementTree.ParseError as exc:
        raise ValueError(str(exc)) from exc
    pairs = [(s.get("name") or "", s.get("value") or "") for s in root.iter("setting")]
    if root.tag != "settings" or not pairs or not all(name for name, _ in pairs):
        raise ValueError("expected <settings><setting name=... value=... /></settings>")
    return pairs


def date_literal(moment: datetime) -> str:
    return f"/Date({int(moment.timestamp() * 1000)}+0000)/"


class PluginService:
    """The tables' rules and the asynchronous service of one emulator (called under its data lock)."""

    default_timeout = TIMEOUT_SECONDS

    def __init__(self, emulator: DataverseEmulator) -> None:
        self.emulator = emulator
        self.outbox = Outbox("dataverse", self)
        self.secrets: dict[str, str] = {}  # service endpoint id -> authvalue (write-only in the API)

    # ---- tables ------------------------------------------------------------------------------
    def seed(self) -> None:
        """The messages and filters every environment has; called after each reset."""
        self.secrets.clear()
        self.outbox.clear()
        store = self.emulator.store
        now = self.emulator.clock.now()
        messages = [
            _system_row("sdkmessage", _message_id(name), now, name=name, categoryname="", isprivate=False)
            for name in MESSAGES
        ]
        store.bulk_insert("sdkmessage", messages)
        store.bulk_insert("sdkmessagefilter", [_filter_row(m, t, now) for m in MESSAGES for t in MESSAGE_TABLES[m]])

    def table_added(self, table: Table) -> None:
        """A custom table: every message has a filter for it, the bulk ones included."""
        now = self.emulator.clock.now()
        self.emulator.store.bulk_insert("sdkmessagefilter", [_filter_row(m, table.logical_name, now) for m in MESSAGES])

    def referencing(self, navigation: Navigation, record_id: str) -> list[str]:
        """The ids of the rows a collection-valued navigation of a plug-in table reaches from ``record_id``."""
        data = self.emulator.store.data(navigation.target)
        key = REFERENCING[navigation.name]
        return [row_id for row_id in data.order if data.rows[row_id].get(key) == record_id]

    def check(self, table: Table, row: dict[str, Any]) -> None:
        """The rules of a new or changed endpoint or step (before it is stored)."""
        if table.logical_name == "serviceendpoint":
            self._check_endpoint(row)
        elif table.logical_name == "sdkmessageprocessingstep":
            self._check_step(row)

    def _check_endpoint(self, row: dict[str, Any]) -> None:
        if row.get("contract") is None or row.get("authtype") is None:
            raise ApiError(400, "0x80040203", "Attribute 'contract' and 'authtype' are required for serviceendpoint.")
        if row["contract"] != WEBHOOK_CONTRACT:
            return
        parts = urlsplit(str(row.get("url") or ""))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ApiError(400, "0x80040203", "A webhook service endpoint needs an absolute http or https url.")
        if row["authtype"] not in (AUTH_WEBHOOK_KEY, AUTH_HEADER, AUTH_QUERY):
            raise ApiError(
                400, "0x80040203", "A webhook service endpoint takes authtype 4 (WebhookKey), 5 (HttpHeader) or 6."
            )  # text unverified
        secret = row.get("authvalue") or self.secrets.get(row["serviceendpointid"])
        if not secret:
            raise ApiError(400, "0x80040203", "A webhook service endpoint needs an authvalue.")  # text unverified
        if row["authtype"] != AUTH_WEBHOOK_KEY:
            try:
                parse_settings(secret)
            except ValueError as exc:
                raise ApiError(
                    400, "0x80040203", f"The authvalue is not valid <settings> XML for its authtype: {exc}"
                ) from exc  # text unverified

    def _check_step(self, row: dict[str, Any]) -> None:
        if row.get("stage") is None or row.get("_sdkmessageid_value") is None:
            raise ApiError(400, "0x80040203", "Attribute 'stage' and 'sdkmessageid' are required.")  # unverified
        if row.get("mode") == 1 and row["stage"] != 40:
            raise ApiError(
                400, "0x80040203", "Asynchronous steps are supported only in the post-operation stage (40)."
            )  # text unverified
        filter_id = row.get("_sdkmessagefilterid_value")
        if filter_id is not None:
            found = self.emulator.store.data("sdkmessagefilter").rows.get(filter_id) or {}
            if found.get("_sdkmessageid_value") != row["_sdkmessageid_value"]:
                raise ApiError(
                    400, "0x80040203", "The sdkmessagefilter does not belong to the step's sdkmessage."
                )  # text unverified

    # ---- changes -----------------------------------------------------------------------------
    def observe(
        self, logical_name: str, old: dict[str, Any] | None, new: dict[str, Any], sent: frozenset[str] | None
    ) -> None:
        """Told by the store after each insert or replace (a change set's once it commits)."""
        if logical_name == "serviceendpoint":
            if new.get("authvalue") is not None:  # write-only: kept aside, never read back
                self.secrets[new["serviceendpointid"]] = new["authvalue"]
                new["authvalue"] = None
            return
        if logical_name in PLUGIN_TABLES or logical_name == "listmember":
            return
        steps = self.emulator.store.data("sdkmessageprocessingstep").rows
        if not steps:
            return
        message = "Create" if old is None else "Update"
        columns = self._target_columns(old, new, sent)
        for step in list(steps.values()):
            if self._runs(step, message, logical_name, columns):
                self._queue(step, message, logical_name, new, columns)

    @staticmethod
    def _target_columns(old: dict[str, Any] | None, new: dict[str, Any], sent: frozenset[str] | None) -> list[str]:
        if old is None:
            keys = [k for k, v in new.items() if v is not None]
        elif sent is not None:
            keys = list(sent)
        else:
            keys = [k for k in new if new.get(k) != old.get(k)]
        return [k for k in keys if "@" not in k and k not in SYSTEM_COLUMNS]

    def _runs(self, step: dict[str, Any], message: str, logical_name: str, columns: list[str]) -> bool:
        store = self.emulator.store
        if step.get("statecode") != 0 or step.get("mode") != 1 or step.get("stage") != 40:
            return False
        found = store.data("sdkmessage").rows.get(step.get("_sdkmessageid_value") or "")
        if found is None or found.get("name") != message:
            return False
        message_filter = store.data("sdkmessagefilter").rows.get(step.get("_sdkmessagefilterid_value") or "")
        if message_filter is None or message_filter.get("primaryobjecttypecode") != logical_name:
            return False
        if message == "Update" and step.get("filteringattributes"):
            wanted = {c.strip().lower() for c in str(step["filteringattributes"]).split(",") if c.strip()}
            named = {_attribute_name(c) for c in columns}
            if not wanted & named:
                return False
        endpoint = store.data("serviceendpoint").rows.get(step.get("_eventhandler_value") or "")
        return endpoint is not None and endpoint.get("contract") == WEBHOOK_CONTRACT

    def _queue(
        self, step: dict[str, Any], message: str, logical_name: str, row: dict[str, Any], columns: list[str]
    ) -> None:
        store = self.emulator.store
        endpoint = store.data("serviceendpoint").rows[step["_eventhandler_value"]]
        table = self.emulator.tables[logical_name]
        user = row.get("_modifiedby_value") or row.get("_createdby_value")
        correlation = str(uuid.uuid4())
        now = self.emulator.clock.now()
        context = self._context(step, message, table, row, columns, user, correlation, now)
        url, headers = self._address(endpoint)
        headers.update(
            {
                "Content-Type": "application/json",
                "x-ms-dynamics-organization": "127.0.0.1",
                "x-ms-dynamics-entity-name": logical_name,
                "x-ms-dynamics-request-name": message,
                "x-ms-correlation-request-id": correlation,
            }
        )
        info = {
            "type": message,
            "stepId": step["sdkmessageprocessingstepid"],
            "endpointId": endpoint["serviceendpointid"],
            "entity": logical_name,
            "recordId": row[table.primary_id],
            "initiatingUserId": user,
            "correlationId": correlation,
            "asyncautodelete": bool(step.get("asyncautodelete")),
            "stepName": step.get("name"),
        }
        body = json.dumps(context).encode()
        self.outbox.send(step["sdkmessageprocessingstepid"], url, body, headers, info, delay=PICKUP_SECONDS)

    def _address(self, endpoint: dict[str, Any]) -> tuple[str, dict[str, str]]:
        url = str(endpoint["url"])
        secret = self.secrets.get(endpoint["serviceendpointid"], "")
        headers: dict[str, str] = {}
        query: list[tuple[str, str]] = []
        if endpoint.get("authtype") == AUTH_WEBHOOK_KEY:
            query.append(("code", secret))
        elif endpoint.get("authtype") == AUTH_HEADER:
            headers.update(parse_settings(secret))
        elif endpoint.get("authtype") == AUTH_QUERY:
            query += parse_settings(secret)
        if query:
            parts = urlsplit(url)
            joined = "&".join(p for p in (parts.query, urlencode(query)) if p)
            url = urlunsplit((parts.scheme, parts.netloc, parts.path, joined, parts.fragment))
        return url, headers

    def _context(
        self,
        step: dict[str, Any],
        message: str,
        table: Table,
        row: dict[str, Any],
        columns: list[str],
        user: str | None,
        correlation: str,
        now: datetime,
    ) -> dict[str, Any]:
        from .server import BUSINESS_UNIT_ID, ORGANIZATION_ID  # the server imports this module

        record_id = row[table.primary_id]
        target = {
            "__type": f"Entity:{CONTRACTS}",
            "Attributes": [_attribute(table, key, row.get(key)) for key in columns],
            "EntityState": None,
            "FormattedValues": [],
            "Id": record_id,
            "KeyAttributes": [],
            "LogicalName": table.logical_name,
            "RelatedEntities": [],
            "RowVersion": str(row.get("versionnumber")),
        }
        outputs = [{"key": "id", "value": record_id}] if message == "Create" else []
        return {
            "BusinessUnitId": BUSINESS_UNIT_ID,
            "CorrelationId": correlation,
            "Depth": 1,
            "InitiatingUserAzureActiveDirectoryObjectId": "00000000-0000-0000-0000-000000000000",
            "InitiatingUserId": user,
            "InputParameters": [{"key": "Target", "value": target}],
            "IsExecutingOffline": False,
            "IsInTransaction": False,
            "IsOfflinePlayback": False,
            "IsolationMode": 1,
            "MessageName": message,
            "Mode": 1,
            "OperationCreatedOn": date_literal(now),
            "OperationId": str(uuid.uuid4()),
            "OrganizationId": ORGANIZATION_ID,
            "OrganizationName": "emulator",
            "OutputParameters": outputs,
            "OwningExtension": {
                "Id": step["sdkmessageprocessingstepid"],
                "KeyAttributes": [],
                "LogicalName": "sdkmessageprocessingstep",
                "Name": step.get("name"),
                "RowVersion": None,
            },
            "ParentContext": None,
            "PostEntityImages": [],
            "PreEntityImages": [],
            "PrimaryEntityId": record_id,
            "PrimaryEntityName": table.logical_name,
            "RequestId": str(uuid.uuid4()),
            "SecondaryEntityName": "none",
            "SharedVariables": [],
            "Stage": 40,
            "UserAzureActiveDirectoryObjectId": "00000000-0000-0000-0000-000000000000",
            "UserId": user,
        }

    # ---- the outbox's policy ------------------------------------------------------------------
    def sign(self, delivery: Delivery) -> dict[str, str]:
        return {}

    def retry_after(self, delivery: Delivery, outcome: Outcome) -> float | None:
        if outcome.status in RETRIED_STATUSES and len(delivery.attempts) == 1:
            return 0.0
        return None

    def settle(self, delivery: Delivery, outcome: Outcome) -> str:
        return "failed"

    def finished(self, delivery: Delivery, outcome: Outcome) -> None:
        if outcome.ok and delivery.info.get("asyncautodelete"):
            return
        emulator = self.emulator
        with emulator.data_lock:
            if delivery.info["stepId"] not in emulator.store.data("sdkmessageprocessingstep").rows:
                return  # the step went away meanwhile: its lookup would dangle
            now = emulator.clock.now()
            error = (
                f"The remote service answered HTTP {outcome.status}."
                if outcome.status is not None
                else f"The remote service could not be reached ({outcome.error})."
            )  # text unverified
            row = {
                "asyncoperationid": str(uuid.uuid4()),
                "name": delivery.info.get("stepName"),
                "operationtype": 1,
                "statecode": COMPLETED,
                "statuscode": SUCCEEDED if outcome.ok else FAILED,
                "message": None if outcome.ok else error,
                "friendlymessage": None if outcome.ok else "An error occurred in the webhook call.",  # unverified
                "errorcode": None if outcome.ok else -2147220891,  # unverified
                "primaryentitytype": delivery.info["entity"],
                "messagename": delivery.info["type"],
                "correlationid": delivery.info["correlationId"],
                "completedon": now,
                "retrycount": len(delivery.attempts) - 1,
                "_owningextensionid_value": delivery.info["stepId"],
                "createdon": now,
                "modifiedon": now,
                "_createdby_value": delivery.info.get("initiatingUserId"),
                "_modifiedby_value": delivery.info.get("initiatingUserId"),
            }
            emulator.store.insert("asyncoperation", row)

    def close(self) -> None:
        self.outbox.close()


def _message_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dataverse-emulator/sdkmessage/{name}"))


def _filter_row(message: str, table: str, now: datetime) -> dict[str, Any]:
    return _system_row(
        "sdkmessagefilter",
        str(uuid.uuid5(uuid.NAMESPACE_URL, f"dataverse-emulator/sdkmessagefilter/{message}/{table}")),
        now,
        name=None,
        _sdkmessageid_value=_message_id(message),
        primaryobjecttypecode=table,
        secondaryobjecttypecode="none",
        iscustomprocessingstepallowed=True,
        availability=0,
    )


def _system_row(logical: str, row_id: str, now: datetime, **values: Any) -> dict[str, Any]:
    return {f"{logical}id": row_id, **values, "createdon": now, "modifiedon": now}


def _attribute_name(key: str) -> str:
    """A row key as the attribute's logical name: ``_parentcustomerid_value`` -> ``parentcustomerid``."""
    if key.startswith("_") and key.endswith("_value"):
        return key[1:-6]
    return key


def _attribute(table: Table, key: str, value: Any) -> dict[str, Any]:
    """One entry of the Target's Attributes as the context serialises it."""
    attribute = table.by_row_key(key)
    name = _attribute_name(key)
    if value is None or attribute is None:
        return {"key": name, "value": value}
    if attribute.type in (PICKLIST, STATE, STATUS):
        return {"key": name, "value": {"__type": f"OptionSetValue:{CONTRACTS}", "Value": value}}
    if attribute.type == LOOKUP:
        return {
            "key": name,
            "value": {
                "__type": f"EntityReference:{CONTRACTS}",
                "Id": value,
                "KeyAttributes": [],
                "LogicalName": attribute.targets[0] if attribute.targets else None,
                "Name": None,
                "RowVersion": None,
            },
        }
    if attribute.type == DATETIME and isinstance(value, datetime):
        return {"key": name, "value": date_literal(value)}
    return {"key": name, "value": value}
