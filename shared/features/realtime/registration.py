"""`webhooks register|status|remove`: the Mailchimp webhook of every linked audience, and the Dataverse webhook
service endpoint with its asynchronous post-operation steps; idempotent, and ``remove`` takes away exactly
what ``register`` recorded.

Mailchimp: one webhook per audience at ``PUBLIC_BASE_URL/api/webhooks/mailchimp?secret=…`` for subscribe,
unsubscribe, profile, upemail and cleaned, from the sources ``user`` and ``admin`` (never ``api``: the product's
own writes must not come back). Its signing secret, returned only by the create, is kept in SyncState. A
webhook already at that URL is adopted, unless it signs and its secret is unknown (then it is made again); one
the product made at another URL (a new base URL, a rotated secret) is deleted.

Dataverse: a service endpoint (contract 8 Webhook, authtype 5 HttpHeader carrying ``X-Consent-Bridge-Secret``,
JSON) and a step per message (Create, Update) and table (contact, lead, account): stage 40, mode 1
(asynchronous: a slow or absent endpoint never blocks a user saving a record), Update filtered to the columns
the product reads; and a step on Update of each watched table of the product's own (the audience memberships,
filtered to their status), whose edits are consent changes too. Registering again rewrites the endpoint's URL
and secret, so it also rotates the secret.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.sax.saxutils import quoteattr

from shared.adapters.dataverse import DataverseError
from shared.adapters.mailchimp import MailchimpError
from shared.adapters.ports import Services
from shared.errors import ConfigurationError
from shared.features.realtime.events import WatchedTable
from shared.features.realtime.registry import DataverseEndpoint, MailchimpWebhook, WebhookRegistry
from shared.model.times import iso_seconds, now

log = logging.getLogger("consent_bridge.webhooks")

EVENTS = {"subscribe": True, "unsubscribe": True, "profile": True, "upemail": True, "cleaned": True, "campaign": False}
SOURCES = {"user": True, "admin": True, "api": False}
MAILCHIMP_PATH = "/api/webhooks/mailchimp"
DATAVERSE_PATH = "/api/webhooks/dataverse"
SECRET_HEADER = "X-Consent-Bridge-Secret"  # noqa: S105 - the header's name, not a secret
MESSAGES = ("Create", "Update")
TABLES = ("contact", "lead", "account")
CONTRACT_WEBHOOK, AUTH_HTTP_HEADER, FORMAT_JSON = 8, 5, 2
STAGE_POST_OPERATION, MODE_ASYNCHRONOUS = 40, 1


@dataclass
class Registered:
    """One registration as `status` shows it."""

    what: str
    where: str
    state: str
    last_delivery: datetime | None = None

    def line(self) -> str:
        last = f"last event applied {iso_seconds(self.last_delivery)}" if self.last_delivery else "no event yet"
        return f"{self.what}: {self.state}; {self.where}; {last}"


class Registration:
    def __init__(self, services: Services, watched: Sequence[WatchedTable] = ()) -> None:
        self.services = services
        self.watched = {table.table: table for table in watched}  # the product's own tables whose edits are consent
        self.settings = services.settings
        self.registry = WebhookRegistry(services.storage)

    def _base(self) -> str:
        if not self.settings.public_base_url or not self.settings.webhook_secret:
            raise ConfigurationError(
                "PUBLIC_BASE_URL",
                "is not set, so there is no real-time path to register",
                "set PUBLIC_BASE_URL to the function app's root and WEBHOOK_SECRET to 32 or more random characters",
            )
        return self.settings.public_base_url

    def audiences(self) -> list[str]:
        return sorted({link.audience_id for link in self.settings.links})

    # ---- register ------------------------------------------------------------------------------
    def register(self) -> list[str]:
        base = self._base()
        lines = [self._register_audience(audience, base) for audience in self.audiences()]
        lines += self._register_dataverse(base)
        return lines

    def _register_audience(self, audience: str, base: str) -> str:
        mailchimp = self.services.mailchimp
        secret = self.settings.webhook_secret or ""
        url = f"{base}{MAILCHIMP_PATH}?secret={secret}"
        shown = f"{base}{MAILCHIMP_PATH}"
        known = self.registry.mailchimp_webhooks().get(audience)
        existing = mailchimp.webhooks(audience)
        for hook in existing:
            ours = known is not None and hook.get("id") == known.webhook_id
            if hook.get("url") == url:
                signs_unknown = bool(hook.get("signing_enabled")) and not (ours and known and known.signing_secret)
                if not signs_unknown:
                    if not ours:
                        self.registry.save_mailchimp(MailchimpWebhook(audience, str(hook["id"]), shown))
                    return f"Mailchimp audience {audience}: webhook {hook['id']} already registered"
                mailchimp.delete_webhook(audience, str(hook["id"]))  # its signing secret cannot be read back
            elif ours:
                mailchimp.delete_webhook(audience, str(hook["id"]))  # an earlier URL or secret of the product's
        created = mailchimp.create_webhook(audience, url, EVENTS, SOURCES)
        made = MailchimpWebhook(audience, str(created["id"]), shown, str(created.get("signing_secret") or ""), now())
        self.registry.save_mailchimp(made)
        signed = "signed" if made.signing_secret else "unsigned"
        return f"Mailchimp audience {audience}: webhook {made.webhook_id} registered ({signed})"

    def _register_dataverse(self, base: str) -> list[str]:
        dataverse = self.services.dataverse
        user = str(dataverse.whoami().get("UserId") or "")
        if user:
            self.registry.remember_user(user)
        url = f"{base}{DATAVERSE_PATH}"
        secret = quoteattr(self.settings.webhook_secret or "")
        auth = f"<settings><setting name={quoteattr(SECRET_HEADER)} value={secret} /></settings>"
        body = {
            "name": f"Consent Bridge ({self.settings.dataverse_prefix})",
            "url": url,
            "contract": CONTRACT_WEBHOOK,
            "authtype": AUTH_HTTP_HEADER,
            "messageformat": FORMAT_JSON,
            "authvalue": auth,
        }
        known = self.registry.dataverse_endpoint()
        endpoint_id = known.endpoint_id if known and self._exists("serviceendpoints", known.endpoint_id) else ""
        lines = []
        if endpoint_id:
            dataverse.update("serviceendpoints", endpoint_id, body)
            lines.append(f"Dataverse: service endpoint {endpoint_id} already registered (URL and secret rewritten)")
        else:
            endpoint_id = dataverse.create("serviceendpoints", body)
            lines.append(f"Dataverse: service endpoint {endpoint_id} registered")
        steps = self._register_steps(endpoint_id, known.steps if known else [], lines)
        self.registry.save_dataverse(DataverseEndpoint(endpoint_id, steps, url, known.created if known else now()))
        return lines

    def _register_steps(self, endpoint_id: str, known: list[str], lines: list[str]) -> list[str]:
        dataverse = self.services.dataverse
        existing = {
            str(row.get("name")): row
            for row in dataverse.get(
                "sdkmessageprocessingsteps",
                {
                    "$select": "sdkmessageprocessingstepid,name,filteringattributes",
                    "$filter": f"_eventhandler_value eq {endpoint_id}",
                },
            ).get("value", [])
        }
        steps: list[str] = []
        for message in MESSAGES:
            message_id = self._message_id(message)
            # the records on Create and Update; a watched table (its rows are the product's) on Update only
            for table in [*TABLES, *(self.watched if message == "Update" else ())]:
                name = f"Consent Bridge: {message} of {table}"
                columns = ",".join(self.columns(table)) if message == "Update" else None
                found = existing.get(name)
                if found is not None:
                    step_id = str(found["sdkmessageprocessingstepid"])
                    if message == "Update" and found.get("filteringattributes") != columns:
                        dataverse.update("sdkmessageprocessingsteps", step_id, {"filteringattributes": columns})
                        lines.append(f"Dataverse: step {name!r} now filtered to {columns}")
                    steps.append(step_id)
                    continue
                body: dict[str, Any] = {
                    "name": name,
                    "mode": MODE_ASYNCHRONOUS,
                    "stage": STAGE_POST_OPERATION,
                    "rank": 1,
                    "supporteddeployment": 0,
                    "asyncautodelete": True,
                    "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({endpoint_id})",
                    "sdkmessageid@odata.bind": f"/sdkmessages({message_id})",
                    "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({self._filter_id(message_id, table)})",
                }
                if columns:
                    body["filteringattributes"] = columns
                steps.append(dataverse.create("sdkmessageprocessingsteps", body))
                lines.append(f"Dataverse: step {name!r} registered")
        if not any(line.startswith("Dataverse: step") for line in lines):
            lines.append(f"Dataverse: {len(steps)} steps already registered")
        for stale in set(known) - set(steps):  # steps an earlier register made and this one does not need
            self._delete("sdkmessageprocessingsteps", stale)
        return steps

    def columns(self, table: str) -> list[str]:
        """The columns of one table the product reads: a change to one of them is worth an event."""
        if table in self.watched:
            return sorted(self.watched[table].columns)
        found = ["emailaddress1", "statecode", *self.settings.opt_out_columns]
        if self.settings.subscriber_status_column:
            found.append(self.settings.subscriber_status_column)
        for mapping in getattr(self.settings, "field_map", ()):
            kinds = getattr(mapping, "kinds", None)
            if kinds is None or table in kinds:
                found.append(str(mapping.column))
        return sorted(set(found))

    def _message_id(self, message: str) -> str:
        rows = self.services.dataverse.get(
            "sdkmessages", {"$select": "sdkmessageid", "$filter": f"name eq '{message}'"}
        ).get("value", [])
        if not rows:
            raise ConfigurationError("DATAVERSE_URL", f"the environment has no {message} message", "check the URL")
        return str(rows[0]["sdkmessageid"])

    def _filter_id(self, message_id: str, table: str) -> str:
        rows = self.services.dataverse.get(
            "sdkmessagefilters",
            {
                "$select": "sdkmessagefilterid",
                "$filter": f"_sdkmessageid_value eq {message_id} and primaryobjecttypecode eq '{table}'",
            },
        ).get("value", [])
        if not rows:
            raise ConfigurationError("DATAVERSE_URL", f"the environment has no message filter for {table}", "")
        return str(rows[0]["sdkmessagefilterid"])

    def _exists(self, entity_set: str, row_id: str) -> bool:
        try:
            self.services.dataverse.get(f"{entity_set}({row_id})", {"$select": "name"})
        except DataverseError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _delete(self, entity_set: str, row_id: str) -> bool:
        try:
            self.services.dataverse.delete(entity_set, row_id)
        except DataverseError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # ---- status ----------------------------------------------------------------------------------
    def status(self) -> list[Registered]:
        found: list[Registered] = []
        last = self.registry.last_deliveries()
        hooks = self.registry.mailchimp_webhooks()
        for audience in self.audiences():
            hook = hooks.get(audience)
            if hook is None:
                found.append(Registered(f"Mailchimp audience {audience}", "-", "not registered"))
                continue
            try:
                present = any(h.get("id") == hook.webhook_id for h in self.services.mailchimp.webhooks(audience))
                state = f"webhook {hook.webhook_id} {'registered' if present else 'MISSING in Mailchimp'}"
            except MailchimpError as exc:
                state = f"webhook {hook.webhook_id} (Mailchimp could not be asked: {exc})"
            signed = "signed" if hook.signing_secret else "unsigned"
            found.append(
                Registered(
                    f"Mailchimp audience {audience}", f"{hook.url} ({signed})", state, last.get(f"mailchimp|{audience}")
                )
            )
        endpoint = self.registry.dataverse_endpoint()
        if endpoint is None:
            found.append(Registered("Dataverse", "-", "not registered"))
        else:
            present = self._exists("serviceendpoints", endpoint.endpoint_id)
            failures = self._failures(endpoint.steps)
            state = (
                f"service endpoint {endpoint.endpoint_id} {'registered' if present else 'MISSING in Dataverse'} "
                f"with {len(endpoint.steps)} steps"
                + (f"; {failures} failed deliveries in system jobs" if failures else "")
            )
            found.append(Registered("Dataverse", endpoint.url, state, last.get("dataverse|")))
        return found

    def _failures(self, steps: list[str]) -> int:
        """Failed webhook deliveries kept as system jobs (statuscode 31) of these steps."""
        failed = 0
        for step in steps:
            try:
                rows = self.services.dataverse.get(
                    "asyncoperations",
                    {
                        "$select": "asyncoperationid",
                        "$filter": f"statuscode eq 31 and _owningextensionid_value eq {step}",
                    },
                ).get("value", [])
            except DataverseError as exc:
                log.warning("the system jobs of step %s could not be read: %s", step, exc)
                return failed
            failed += len(rows)
        return failed

    # ---- remove ----------------------------------------------------------------------------------
    def remove(self) -> list[str]:
        lines = []
        for audience, hook in sorted(self.registry.mailchimp_webhooks().items()):
            gone = self.services.mailchimp.delete_webhook(audience, hook.webhook_id)
            self.registry.forget_mailchimp(audience)
            lines.append(
                f"Mailchimp audience {audience}: webhook {hook.webhook_id} {'removed' if gone else 'was gone'}"
            )
        endpoint = self.registry.dataverse_endpoint()
        if endpoint is not None:
            removed = sum(self._delete("sdkmessageprocessingsteps", step) for step in endpoint.steps)
            gone = self._delete("serviceendpoints", endpoint.endpoint_id)
            self.registry.forget_dataverse()
            lines.append(
                f"Dataverse: {removed} steps and service endpoint {endpoint.endpoint_id} "
                f"{'removed' if gone else '(the endpoint was gone)'}"
            )
        return lines or ["nothing was registered"]
