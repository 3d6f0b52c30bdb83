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
- ``GET|POST /lists/{id}/webhooks``, ``GET|DELETE /lists/{id}/webhooks/{webhook_id}`` (recorded, never called).
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
  {"compliance": "strict"}`` refuses that too (every unsubscribe a compliance state). The state and who
  unsubscribed are not in the API's member (``unsubscribe_reason`` is "N/A (Unsubscribed by an admin)" for
  admin and API unsubscribes); ``/_admin/state`` shows them.
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
- Merge fields: unknown tags are ignored; a required field left empty on create is 400 "Your merge
  fields were invalid." unless ``skip_merge_validation=true``. Unknown interest ids: 400 "Invalid
  interest ID".
- More than 10 requests in flight for one key: 429 TooManyRequests.

Admin API (beyond the base's /_admin routes)
--------------------------------------------
    POST /_admin/seed        {"audiences": [{"id", "name", "double_optin"?, "merge_fields"?: [{"tag", "name",
                              "type", "required"}], "marketing_permissions"?: [{"id"?, "text"}]}],
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
    GET  /_admin/webhooks?list_id=L        the webhooks registered through the API
    GET  /_admin/stats       {"lastMembersScanned": n, "inFlight": n}: members the last list read touched
    POST /_admin/settings    {"fakeDomains": [...], "latencySeconds": s, "concurrencyLimit": 10,
                              "compliance": "documented" | "strict"} (a reset returns to the constructor's mode)
                             latency is spent inside each API call, so it counts against the 10 connections
    People (body: list_id, email_address or subscriber_hash, "at"? ISO time, default the emulator clock):
    POST /_admin/people/unsubscribe    {"reason"?, "by"?} the person unsubscribes through a link (a compliance
                                       state); "by": "admin" is an admin unsubscribing them in the web app
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

Not reproduced: webhook deliveries (and the validation GET) and their signing, batch webhooks, the
500-pending-batches limit, datacenter checks of the key against the host, 403 roles, the "signed up to a
lot of lists" throttle, merge-field type checks beyond number and address, member notes, activity feeds
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
