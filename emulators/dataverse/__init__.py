"""A loopback emulator of the Dataverse (Dynamics 365) Web API v9.2, for development and tests.

Serve it with ``python -m emulators.dataverse --port 0`` or ``EmulatorServer(DataverseEmulator())``
and point ``DATAVERSE_URL`` at ``http://127.0.0.1:<port>``. No token is needed on loopback; a
bearer token, when sent, names the user (its ``oid``/``sub`` claim) for the service protection limits.

What it serves under ``/api/data/v9.2/`` (behaviour, limits and error bodies as the real service):

- tables ``contacts``, ``leads``, ``accounts``, ``lists`` and ``listmembers`` (RetrieveMultiple only)
  with their consent columns, ``savedqueries`` (system views: ``returnedtypecode`` must name a table and
  the ``fetchxml`` must query it), ``publishers`` (unique name, a 2-8 character customization prefix not
  starting with ``mscrm``, option value prefix 10000-99999) and ``solutions`` (unique name, version,
  ``publisherid@odata.bind``), plus custom tables created through the metadata API;
- ``GET`` collections with ``$select``/``$filter``/``$orderby``/``$top``/``$count``, ``Prefer:
  odata.maxpagesize`` paging with ``$skiptoken`` next links (``$top`` ignored then), ``$skip``,
  ``$search``, ``$format`` and unknown ``$`` options refused; ``contacts(<id>)``; ``.../$count`` (with a
  ``$deltatoken``: the number of changes that delta link holds, changed and deleted rows);
  navigation collections ``lists(<id>)/listcontact_association`` (and lead/account, and from the
  member side); ``?fetchXml=`` with ``page``/``count``/``paging-cookie`` and the
  ``fetchxmlpagingcookie``/``morerecords`` annotations;
- change tracking: ``Prefer: odata.track-changes`` (``$select`` only), ``@odata.deltaLink`` on the
  last page, ``$deltatoken`` links returning changed rows by version then ``$deletedEntity`` rows,
  expiry after ``changeTrackingExpireDays`` (7) and refusal on tables without change tracking;
- writes: ``POST`` (204 + ``OData-EntityId``, or 201 with ``Prefer: return=representation``),
  ``PATCH`` (``If-Match: *`` no upsert, ``If-Match: W/"n"`` 412, ``If-None-Match: *`` create only,
  upsert without ``If-Match``), ``DELETE``; unknown, lookup and read-only columns refused; qualified
  or disqualified leads and inactive contacts/accounts read-only; server-maintained ``createdon``,
  ``modifiedon`` (emulator clock, whole seconds), ``versionnumber``/``@odata.etag``, ``fullname``,
  ``_createdby_value``/``_modifiedby_value`` (the caller's ``WhoAmI`` UserId);
- marketing lists: ``$ref`` associate/disassociate, ``AddMemberList``, ``AddListMembersList``, the bound
  ``RemoveMemberList`` of an environment with Dynamics 365 apps (``EntityId``: the member record's or the list
  member's id; no return value);
  membership writes a ``listmember`` row and never touches the member's ``modifiedon`` (the list's
  ``membercount`` follows without a new list version); locked lists take no new members, member types
  must match ``createdfromcode``; dynamic lists take no manual members, have no ``listmember`` rows and a
  ``membercount`` of null:
  their members are their ``query`` run through ``?fetchXml=`` (``/_admin/state`` shows them);
- ``$batch`` with change sets (atomic, several per request, a failed one answered by its one error part),
  ``Content-ID`` references, 1,000 requests at most, stop-on-first-error or ``Prefer: odata.continue-on-error``;
- the bound actions ``<entityset>/Microsoft.Dynamics.CRM.CreateMultiple`` and ``UpdateMultiple`` on contact,
  lead, account and custom tables (``multiple.py``): one transaction, all or nothing, ``@odata.type`` on
  every target;
- a latency model, off by default (``latency.py``): server time per request by kind, ``$batch`` run part
  after part, the ``x-ms-dop-hint`` header; service protection's window and budget follow its time scale;
- metadata: ``EntityDefinitions`` and ``(LogicalName='x')`` (``$select``, a small ``$filter``) with
  ``$expand=Attributes($select=...;$filter=...)`` and ``Keys`` (always empty: no alternate keys), on the
  collection and on one table; ``/Attributes`` and ``/Attributes(LogicalName='x')``, each also cast to a
  derived type (``/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata``, String, Memo, Boolean, Integer,
  BigInt, Picklist, State, Status, Lookup, EntityName), the cast collection holding only columns of that
  type; ``$select`` of a derived type's properties (``MaxLength``, ``Format``, ``DateTimeBehavior``,
  ``Targets``, ...) needs the cast, as in the real service, and a cast with options takes
  ``$expand=OptionSet``; other expansions (relationships, privileges, ``GlobalOptionSet``), options
  inside an expansion other than ``$select``/``$filter`` and casts to types no column has (Money,
  MultiSelectPicklist, ...) answer 501 rather than leave something out; ``POST`` of Boolean, Picklist,
  String, Memo, DateTime, Integer and BigInt columns and of custom tables (entity set name derived as the
  plural of the logical name); ``PublishXml``/``PublishAllXml``;
- solutions: a metadata ``POST`` or a ``savedqueries`` create with ``MSCRM.SolutionUniqueName`` lands in
  that solution (an unknown solution is a 404); its SchemaName (and a table's custom columns', a
  relationship's lookup's) must carry the prefix of the solution's publisher (400 otherwise); without the
  header the prefix must be one a publisher has (the ``publisherPrefixes`` setting or a ``publishers`` row)
  and the component lands in ``Default``; ``/_admin/state`` lists ``solutionComponents`` (solution, type
  Entity/Attribute/Relationship/SavedQuery, name, table) in the order they were created;
- one-to-many relationships: ``POST RelationshipDefinitions`` with a ``OneToManyRelationshipMetadata`` body
  and its ``Lookup`` adds the lookup column to the referencing table (read and filtered as
  ``_<lookup>_value``, in FetchXML by its logical name), written with ``<Lookup SchemaName>@odata.bind``
  (case-sensitive: another case gets the service's "undeclared property" 400; a bind to a missing row its
  404); ``GET RelationshipDefinitions(SchemaName='x')``/``(<MetadataId>)`` and the collection (``$select``,
  the small ``$filter``); a second relationship or lookup of the same name is refused; deleting a
  referenced row applies the relationship's ``CascadeConfiguration.Delete`` (Cascade, RemoveLink,
  Restrict);
- webhooks (see ``plugins.py``): ``serviceendpoints`` (contract 8 Webhook, ``authtype`` 4/5/6, write-only
  ``authvalue`` ``<settings><setting name="X-..." value="..." /></settings>``), ``sdkmessages`` and
  ``sdkmessagefilters`` (seeded: Create, Update, Delete on contact, lead, account and list; CreateMultiple and
  UpdateMultiple on contact, lead and account; all five on custom tables; ``$filter=sdkmessageid/name eq 'Update' and
  primaryobjecttypecode eq 'contact'``), ``sdkmessageprocessingsteps`` (bound with ``sdkmessageid@odata.bind``,
  ``sdkmessagefilterid@odata.bind``, ``eventhandler_serviceendpoint@odata.bind``) and ``asyncoperations``
  (failed jobs); after a matching Create or Update (Web API, ``$batch`` once committed, CreateMultiple and
  UpdateMultiple item by item, ``/_admin/edit``) an asynchronous stage-40 step POSTs the RemoteExecutionContext
  with ``InitiatingUserId`` = the user who made the change (WhoAmI's UserId for Web API callers,
  ``server.DYNAMICS_USER`` for ``/_admin`` edits) and the endpoint's header, retrying once on 502/503/504;
  ``$filter`` follows a single-target lookup to a column of the row it points at (``sdkmessageid/name``);
- ``WhoAmI``; service protection per user: 6,000 requests and 1,200,000 ms of execution per 300 s,
  52 concurrent requests, each answered with 429, ``Retry-After`` and the real error code.

Admin routes, besides those of ``emulators.common`` (calls, faults, clock, requests, reset):

    POST /_admin/seed          {"contacts": [{...}], "leads": [...], "accounts": [...], "<custom set>": [...],
                                "lists": [{"listid", "listname", "type", "createdfromcode", "query"?,
                                           "lockstatus"?, "members": [ids]}]}
                               rows may set any column, also modifiedon/createdon/statecode; ids are generated
                               when absent; 100,000 rows take about a second
    GET  /_admin/state         counts, settings, limits and custom metadata (tables, columns, relationships);
                               ?entity=contacts[&id=...] the rows
                               (a list row also carries "members")
    POST /_admin/edit          {"entity": "contacts", "id": "...", "changes": {...}} or {"entity", "edits": [...]}:
                               a user editing in Dynamics (new version and modifiedon, record state not checked)
    POST /_admin/delete        {"entity": "contacts", "ids": [...]}: deletions (memberships go too)
    POST /_admin/qualify-lead  {"id": "...", "statecode"?: 1 (2 disqualifies), "statuscode"?: ...}
    POST /_admin/members       {"listid": "...", "add": [ids], "remove": [ids]}: a user editing a static list
    GET  /_admin/stats         {"rowsExamined": n}: rows the queries so far have looked at
    GET/POST /_admin/throttling {"requests": 6000, "windowSeconds": 300, "executionMs": 1200000,
                               "concurrent": 52, "retryAfter": null}; retryAfter overrides the computed
                               Retry-After and may be fractional ("0.1") so tests stay fast; the real service
                               only sends whole seconds
    GET/POST /_admin/settings  {"changeTrackingExpireDays": 7, "inactiveReadOnly": true,
                               "publisherPrefixes": ["new", "cbr"], "requireToken": false,
                               "latencySeconds": 0 (added to every request while it counts as in flight),
                               "faultRetryAfter": "1" (Retry-After of injected 429s and 503s)}
    GET  /_admin/batch-parts   counts of the requests executed inside $batch, by route
    GET  /_admin/webhooks/deliveries  ?wait=<s> (first wait until idle), ?state=, ?type= (Create | Update) ->
                               {"deliveries": [{id, url, state (pending | delivered | failed | dropped | not-sent),
                               duplicate, attempts: [{at, status, error, elapsedMs}], body (the JSON context),
                               type, stepId, endpointId, entity, recordId, initiatingUserId, correlationId}],
                               idle, queued, inFlight, counts}
    POST /_admin/webhooks/flush       {"timeoutSeconds": 30}: wait until no job is queued or in flight
    POST /_admin/webhooks/faults      {"drop": 0.3, "duplicate": 0.1, "seed": 7}: seeded shares of jobs never
                               sent and sent twice; DELETE: none
    GET|POST /_admin/webhooks/settings {"timeScale": 1.0 (multiplies the second before a job runs), "timeoutSeconds":
                               60, "workers": 4}; a reset forgets jobs, log, faults and settings
    GET  /_admin/bulk-targets  records written by CreateMultiple/UpdateMultiple, by message and entity set
    GET/POST /_admin/latency   the latency model (see ``latency.py``): {"enabled": false, "timeScale": 1.0,
                               "singleWriteSeconds": 0.12, "batchOperationSeconds": 0.04,
                               "updateMultipleRecordSeconds": 0.03, "createMultipleRecordSeconds": 0.01,
                               "readRequestSeconds": 0.05, "readRowSeconds": 0.0002, "dopHint": 4,
                               "sqlTimeoutSeconds": 120}, plus the server time it charged ("serverSeconds" by
                               kind, "totalServerSeconds") and the 429s service protection answered ("throttled");
                               ``python -m emulators.dataverse --latency model [--time-scale X]`` starts with it on

Injected faults (``POST /_admin/faults``) answer in Dataverse's shape: 429 with the request-limit
error and ``Retry-After``, ``429-empty`` with no body, 503 with ``Retry-After``, other statuses with
an unexpected-error body; ``slow`` delays the request.

Deliberately not reproduced: ``$expand`` on records and ``$apply`` (501), alternate keys (no keys exist, so a
key URL gets the real "key ... is not valid" 400, and ``Keys`` expands to an empty list), the CSDL
``$metadata`` document (501), ``PUT`` and ``DELETE`` of metadata and relationships, many-to-many and
multi-table (polymorphic) relationships created through metadata, the referenced side's collection
navigation of a created relationship, global option sets, the ``solutioncomponents`` table and the solution
actions (``AddSolutionComponent``, export, import, uninstall: deleting a ``solutions`` row removes only the
row, as deleting an unmanaged solution does), managed solutions, the default publisher and solution as rows
(the ``publisherPrefixes`` setting stands in for them), ``CopyDynamicListToStatic``/
``QualifyLead`` and other actions, direct create/update/delete of ``listmember`` rows (501), plug-in assemblies
and synchronous, Delete, *Multiple and image-carrying webhook steps (stored, never run), the
webhook calls to hosts other than loopback (logged as
``not-sent``),
duplicate detection, auditing, field security, business units and security roles, email format validation,
``Consistency`` and metadata caching delays, the 32 KB URL limit, and per-web-server limits (one server here).
Metadata created inside a failed change set is not rolled back. Inactive contacts/accounts refuse
updates (``inactiveReadOnly``), which the documentation states for the UI while the real API may
accept them; switch it off to test that. Error texts the published catalogue does not give are the
emulator's own and are marked ``# text unverified`` in ``errors.py`` and ``server.py``.
"""

from emulators.dataverse.server import DataverseEmulator

__all__ = ["DataverseEmulator"]
