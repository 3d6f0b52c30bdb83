"""A loopback emulator of the Mailchimp Marketing API v3.0, faithful in the rules the product depends on.

Serve it with ``python -m emulators.mailchimp --port 0`` or ``EmulatorServer(MailchimpEmulator())``;
point the 3.0.80 client at it with ``client.api_client.host = url + "/3.0"``.

API (all under /3.0, HTTP Basic ``anystring:<key>`` or Bearer)
--------------------------------------------------------------
- Keys look like ``<32 hex>-<dc>`` (``0123456789abcdef0123456789abcdef-us21``); Bearer also takes a 32-hex
  OAuth token. No credential: 401 "API Key Missing"; a malformed one: 401 "API Key Invalid". Every
  well-formed key is accepted and each key is its own user.
- ``GET /ping``, ``GET /`` (account), ``GET /lists``, ``GET /lists/{id}`` (stats.member_count = subscribed).
- Members: ``GET /lists/{id}/members`` (count ≤ 1000, offset, status, since/before_last_changed,
  since/before_timestamp_opt, unsubscribed_since (status=unsubscribed only; compares the time of the
  unsubscribe, not last_changed), email_type, vip_only,
  unique_email_id, interest_category_id + interest_ids + interest_match, sort_field timestamp_opt |
  timestamp_signup | last_changed, sort_dir ASC | DESC, fields | exclude_fields). Archived members are
  listed only with ``status=archived``. ``since_*`` and ``before_*`` bounds are **exclusive** (changed
  strictly after / strictly before) at whole-second precision; a value that is not
  ``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM|±HHMM)`` is ignored, as the real API ignores malformed filters.
  ``GET|PUT|PATCH|DELETE /lists/{id}/members/{hash}`` (the path also takes the email address or the
  contact_id), ``POST /lists/{id}/members``, ``POST .../members/{hash}/actions/delete-permanent``.
- ``POST /lists/{id}``: batch subscribe (≤ 500 members, update_existing, sync_tags; per-member errors).
- ``GET|POST /lists/{id}/members/{hash}/tags``; ``GET /lists/{id}/segments`` (tags are static segments, their
  ids unique across the account), ``GET|POST /lists/{id}/segments/{segment_id}`` (members_to_add /
  members_to_remove), ``GET .../segments/{segment_id}/members`` (subscribed and pending members; cleaned,
  transactional and unsubscribed ones with include_cleaned / include_transactional / include_unsubscribed),
  ``GET /lists/{id}/tag-search?name=`` (tags whose name starts with ``name``, any case; all without it).
- ``GET|POST /lists/{id}/interest-categories``, ``GET|PATCH|DELETE .../{category_id}``,
  ``GET|POST .../{category_id}/interests``, ``GET|PATCH|DELETE .../interests/{interest_id}``.
- ``GET|POST /lists/{id}/merge-fields``, ``GET|PATCH|DELETE .../merge-fields/{merge_id}`` (a name and a known type
  to create; a tag used once; at most 30 per audience; a type never changes; deleting one drops its values).
- ``GET|POST /lists/{id}/webhooks``, ``GET|PATCH|DELETE /lists/{id}/webhooks/{webhook_id}`` (PATCH: a new url is
  validated the same way; the events and sources it names change; it does not undo a 410): a POST first makes the
  validator's GET to the URL (any answer but 200: 400 Invalid Resource, ``errors[0].field`` = url); its answer
  carries ``signing_secret`` (64 hex) this once, GETs only ``signing_enabled``; a second webhook with the same
  URL on a list is 400 "Sorry, you can't set up multiple WebHooks for one URL on the same list."; omitted
  ``sources`` mean user and admin. Deliveries as the service makes them: see ``webhooks.py`` (events and
  sources, form fields, signing, the 75-minute retries, 410) and ``emulators/outbox.py`` (the queue).
- ``GET /campaigns`` (status, list_id, since/before_send_time, since/before_create_time, sort_field
  create_time | send_time, count/offset), ``GET /campaigns/{id}``, ``GET /reports`` (sent campaigns, oldest
  send first; type, since/before_send_time, count/offset), ``GET /reports/{id}``,
  ``GET /reports/{id}/sent-to``, ``/email-activity`` (``since``: only later events, only recipients
  with such events), ``/unsubscribed``.
- ``POST /batches``, ``GET /batches``, ``GET|DELETE /batches/{id}``: ``pending`` → (first GET, the
  operations run) ``started`` → (next GET) ``finished`` with ``response_body_url``: a gzipped tar of
  JSON arrays ``[{status_code, operation_id, response}]``, served at ``/_batch-results/...`` for ten
  minutes of the emulator clock. A GET without ``count`` pages through the collection, one result per
  page of 1,000. ``errored_operations`` counts results with status ≥ 400.

Member rules
------------
- subscriber_hash = md5(lower(trim(email))); id = hash; contact_id stays across address changes.
- Status values per endpoint: POST/PUT/batch write subscribed, unsubscribed, cleaned, pending,
  transactional; PATCH the same without transactional; ``archived`` only by DELETE.
- PUT: an existing member takes ``status`` (``status_if_new`` is ignored); a new one takes
  ``status_if_new``, else ``status``; ``email_address`` is required for a new member. When the path's
  member is absent and the body's address is another existing member: 400 Member Exists.
- POST on an existing (not archived) member: 400 Member Exists. An archived member comes back through
  POST, PUT or batch subscribe with its ids and its compliance history.
- Compliance state: after the person's own unsubscribe (a link, a campaign's footer) or a bounce (cleaned, by
  any route), setting ``subscribed`` by any API path (POST, PUT, PATCH, batch subscribe, ``/batches``) is 400
  Member In Compliance State, also when archived since. ``pending`` is allowed after an unsubscribe (a
  confirmation email is recorded) but not for a cleaned member, and it does not lift the state: only the
  person's confirmation click or signup form (admin routes) makes that member subscribed. A member an admin
  (web app) or an API call unsubscribed is not in compliance state and may be subscribed through the API,
  as the service documents; ``MailchimpEmulator(compliance="strict")`` or ``POST /_admin/settings
  {"compliance": "strict"}`` refuses that too (every unsubscribe a compliance state). The state is not in
  the API's member; ``/_admin/state`` shows it and who unsubscribed.
- ``unsubscribe_reason`` ("A subscriber's reason for unsubscribing") is in a member read (and ``fields=``)
  while the member is unsubscribed, absent otherwise, as in the member responses integrators publish. Who
  unsubscribed decides its value:
  - an admin in the web app (``people/unsubscribe`` with "by": "admin", ``people/bulk-unsubscribe``) or any
    API write (PATCH, PUT, POST, batch subscribe, ``/batches``), or a seeded member ``unsubscribed_by``
    admin or api: "N/A (Unsubscribed by admin)". Public sources: the member read after an API unsubscribe
    in testdriven.io's "Integrating Mailchimp with Django" and in kejyun's notes on
    spatie/laravel-newsletter (``Newsletter::unsubscribe``); CruGlobal's MPDX (github.com/chuckmersereau/api_practice,
    app/models/mail_chimp_member.rb) treats that value as "the product or the list manager unsubscribed
    them" and reports having also seen "N/A (Unsubscribed by an admin)", so a reader should accept both;
  - the person (``people/unsubscribe``, a campaign's ``unsubscribe`` activity): the reason the scenario
    gives, else "I no longer want to receive these emails". Modelled: no public member read after a
    person's own unsubscribe was found; the person picks a reason on Mailchimp's unsubscribe form or gives
    none (the campaign's ``/unsubscribed`` report then says "Unspecified" in published output), so the
    default stands for one of the form's choices and anything else is the scenario's text;
  - a cleaned member has none (modelled from the field's description: cleaning is not an unsubscribe).
  Webhooks carry the why separately: an unsubscribe's ``data[reason]`` is "manual" (it stays "manual"
  whatever reason an API write sets, per the brandonseydel/MailChimp.Net report "Unsubscribe Reason Not
  working"), or "abuse" when the person's reason reports spam; ``data[campaign_id]`` names the campaign
  whose footer they used (empty otherwise); a cleaned event's ``data[reason]`` is "hard", with the bouncing
  campaign's id.
- Members carry ``marketing_permissions`` (one entry per permission of the audience: id, text, enabled;
  POST/PUT/PATCH set them, an unknown id is 400 Invalid Resource, a change moves last_changed) and the
  ``sms_phone_number`` / ``sms_subscription_status`` / ``sms_subscription_last_updated`` fields (empty
  unless seeded; the API does not write them here).
- Entering ``pending`` records one confirmation email; a write that leaves a pending member pending does
  not send another.
- An address change (PATCH or PUT with a new email_address) is refused when the new address is already
  on the list, in any status ("Invalid Resource", errors[].field = email_address), when it was
  permanently deleted, or when the member is not subscribed (the service only changes subscribers'
  addresses).
- After delete-permanent any add of that address (POST, PUT, batch, address change) is 400 Forgotten
  Email Not Subscribed, even as pending; only the person's own signup (admin resubscribe) brings it back.
- Addresses: syntactically valid (one @, no spaces, dotted domain with a letter TLD) and not under the
  reserved TLDs .test, .invalid, .localhost, .example, .local, nor under a configured fake domain;
  otherwise 400 Invalid Resource "<email> looks fake or invalid, please enter a real email address.".
  example.com / example.org are accepted because the demo and the tests use them.
- ``last_changed`` moves only when the member's info really changes (status, address, merge fields,
  interests, vip, language, email type, opt-in data); tag changes do not move it.
- Merge fields (merge_fields.py): unknown tags are ignored; each value is checked by its merge field's type
  (number, date in its ``date_format``, birthday MM/DD or DD/MM, phone, a complete address, url, zip, a listed
  choice, text within its size of at most 255), in single writes and per member in batch subscribe; a refusal
  or a required field left empty is 400 "Invalid Resource" "Your merge fields were invalid." naming each field
  (a batch error's ``field``/``field_message``); ``skip_merge_validation=true`` lets a required field stay
  empty. Unknown interest ids: 400 "Invalid interest ID".
- More than 10 requests in flight for one key: 429 TooManyRequests.

Admin API (beyond the base's /_admin routes)
--------------------------------------------
    POST /_admin/seed        {"audiences": [{"id", "name", "double_optin"?, "merge_fields"?: [{"tag", "name",
                              "type", "required", "options"?}], "marketing_permissions"?: [{"id"?, "text"}]}],
                              "interest_categories": [{"list_id", "id"?, "title", "type", "interests": [{"id"?,
                              "name"}]}],
                              "members": [{"list_id", "email_address", "status", "merge_fields"?, "interests"?
                              ({id: bool} or [ids]), "tags"? [names], "last_changed"?, "timestamp_opt"?,
                              "timestamp_signup"?, "unsubscribe_reason"?, "status_before_archive"?, "vip"?,
                              "unsubscribed_by"? (person (default) | admin | api), "unsubscribed_at"?,
                              "marketing_permissions"? {id: bool}, "sms_phone_number"?,
                              "sms_subscription_status"?}],
                              "forgotten": [{"list_id", "email_address"}]}
                             -> {"audiences": [...], "interest_categories": [{id, title, interests: [...]}],
                                 "members": n}. 100,000 members take a few seconds.
    GET  /_admin/state?list_id=L   members by hash (address, status, last_changed, unsubscribed_at,
                             unsubscribed_by, in_compliance_state, merge fields, interests, marketing
                             permissions, tags...), status counts, forgotten hashes, tags, webhooks, and
                             confirmations sent
    GET  /_admin/confirmations?list_id=L   the double opt-in emails the service would have sent
    GET|POST /_admin/latency   the latency model, off by default (``latency.py``): {"enabled": false,
                             "timeScale": 1.0, "callSeconds": 0.3, "batchMemberSeconds": 0.01,
                             "pageMemberSeconds": 0.001}, plus the server time charged ("serverSeconds" by kind,
                             "totalServerSeconds") and the 429s the 10 connections answered ("throttled");
                             ``python -m emulators.mailchimp --latency model [--time-scale X]`` starts with it on
    GET  /_admin/webhooks?list_id=L        the webhooks registered through the API (id, list_id, url, events,
                                           sources, created_at, signing_enabled, disabled: a 410 came back)
    GET  /_admin/webhooks/deliveries       ?wait=<s> (first wait until idle), ?state=, ?type= -> {"deliveries": [{id,
                                           url, state (pending | delivered | failed | dropped | disabled | not-sent),
                                           duplicate, attempts: [{at, status, error, elapsedMs}], body (the form
                                           text), webhookId, listId, type, source (user | admin | api | service),
                                           firedAt}], idle, queued, inFlight, counts: {state: n}}
    POST /_admin/webhooks/flush            {"timeoutSeconds": 30}: wait until nothing is queued or in flight
    POST /_admin/webhooks/faults           {"drop": 0.3, "duplicate": 0.1, "seed": 7}: seeded shares of deliveries
                                           never sent and sent twice; DELETE: none
    GET|POST /_admin/webhooks/settings     {"timeScale": 1.0 (0.001: the 75 minutes of retries in 4.5 s; also
                                           scales the second between a delivery and its duplicate),
                                           "timeoutSeconds": 10, "workers": 4}
                             A reset forgets queued deliveries, the log, the faults and these settings (an
                             attempt in flight finishes unrecorded); seeding an audience again drops its queue
    GET  /_admin/stats       {"lastMembersScanned": n, "inFlight": n}: members the last list read touched
    POST /_admin/settings    {"fakeDomains": [...], "latencySeconds": s, "concurrencyLimit": 10,
                              "compliance": "documented" | "strict", "signWebhooks": true (false: webhooks
                              created from now on are unsigned, as those created before signing existed)}
                             (a reset returns to the constructor's mode and signed webhooks)
                             latency is spent inside each API call, so it counts against the 10 connections
    People (body: list_id, email_address or subscriber_hash, "at"? ISO time, default the emulator clock):
    POST /_admin/people/unsubscribe    {"reason"?, "by"?} the person unsubscribes through a link (a compliance
                                       state); "by": "admin" is an admin unsubscribing them in the web app
    POST /_admin/people/bulk-unsubscribe  {"list_id", "email_addresses"?: [...], "subscriber_hashes"?: [...],
                                       "at"?}: an admin unsubscribes them all at once in the web app (webhook
                                       source admin, one event each) -> {"unsubscribed": n, "missing": [hashes]}
    The people routes act as source "user" for webhooks ("by": "admin" and the bulk route as "admin"); the
    REST API as "api"; campaign sends (campaign events) and bounces (cleaned) reach webhooks whatever their
    sources. The seed makes no events.
    POST /_admin/people/resubscribe    {"merge_fields"?} a signup form: subscribed, or pending with a
                                       confirmation email on a double opt-in audience; works after an
                                       unsubscribe, a bounce, an archive or a permanent delete
    POST /_admin/people/confirm        the person clicks the confirmation email: pending -> subscribed
    POST /_admin/people/bounce         {"type": "hard" | "soft"} hard cleans the member
    POST /_admin/people/change-email   {"new_email_address"} through their profile; contact_id stays
    POST /_admin/people/preferences    {"interests"?: {id: bool}, "merge_fields"?} through their profile
    Campaigns:
    POST /_admin/campaigns             {"list_id", "id"?, "title"?, "subject_line"?, "create_time"?, "send"?,
                                        "send_time"?} -> {"id", "status", "recipients"}
    POST /_admin/campaigns/{id}/send   {"at"?} delivers to the audience's subscribed members
    POST /_admin/campaigns/{id}/activity  {"email_address" | "subscriber_hash", "action": open | click |
                                        bounce | unsubscribe, "at"?, "url"? (click), "type"? (bounce hard|soft),
                                        "reason"? (unsubscribe)} or {"events": [...]}; a hard bounce cleans the
                                        member and an unsubscribe unsubscribes them (both move last_changed)

Webhook deliveries reach loopback URLs only (others are logged as ``not-sent``; registration does not
validate them). Not reproduced: batch webhooks, SMS webhook events, the disabling of webhooks "at
Mailchimp's discretion" after floods, the 500-pending-batches limit, datacenter checks of the key against
the host, 403 roles, the "signed up to a lot of lists" throttle, member notes, activity feeds
(so no ``marketing_permission`` events), e-commerce data, SMS (the fields are read-only data: no SMS
consent writes, SMS webhooks or campaigns), saved (condition) segments and their members, Mailchimp's own
"compliance review", campaign types other than regular, the X-Trigger-Error header and method override;
operations of a batch run in order; a GET without ``count`` in a batch is split into pages but each page is
one result entry. Unverified against the live service (see the research notes) and chosen here: that an
admin or API unsubscribe can be undone through the API (hence the strict mode), that a signup form leading
to pending keeps the state until the click, that a permission change moves last_changed, which statuses a
segment's members list by default, and tag-search's order (by name).

Faults (base ``/_admin/faults``) in Mailchimp's shapes: "429" problem+json TooManyRequests, "429-empty"
(no body, no content type: the 3.0.80 client returns the raw Response), "500" InternalServerError,
"503", "502-html" (an HTML page, as from the CDN), and any other status as problem+json.
"""

from .emulator import MailchimpEmulator

__all__ = ["MailchimpEmulator"]
