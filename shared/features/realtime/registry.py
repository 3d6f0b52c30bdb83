"""What `webhooks register` created and what the routes need to know of it, kept in SyncState (partition
``webhooks``): each audience's webhook id and signing secret, the Dataverse service endpoint and step ids, the
product's own Dataverse user (WhoAmI) and when each registration last delivered.

The routes read it through a short cache: a delivery costs no storage read, except when a signature matches no
known secret (a webhook registered since) and the cache is refreshed once.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.ports import StoragePort
from shared.adapters.storage import SYNC_STATE, upsert
from shared.model.times import now, parse_time
from shared.state.versions import STATE_VERSION, VERSION, check_version

PARTITION = "webhooks"
CACHE_SECONDS = 60.0
REFRESH_SECONDS = 1.0  # at most one forced refresh a second, however many forged deliveries arrive


@dataclass
class MailchimpWebhook:
    audience: str
    webhook_id: str
    url: str  # without the secret
    signing_secret: str = field(default="", repr=False)
    created: datetime | None = None


@dataclass
class DataverseEndpoint:
    endpoint_id: str
    steps: list[str]
    url: str
    created: datetime | None = None


class WebhookRegistry:
    def __init__(self, storage: StoragePort) -> None:
        self.storage = storage
        self._lock = threading.Lock()
        self._loaded_at = -1e9
        self._refreshed_at = -1e9
        self._secrets: dict[str, str] = {}
        self._user: str | None = None

    # ---- what the routes ask ---------------------------------------------------------------------
    def signing_secrets(self, *, refresh: bool = False) -> dict[str, str]:
        """Audience id -> signing secret of every signed webhook register created."""
        self._load(refresh)
        return dict(self._secrets)

    def own_user(self, *, refresh: bool = False) -> str | None:
        """The product's own Dataverse user id, once register or the events handler asked WhoAmI."""
        self._load(refresh)
        return self._user

    def _load(self, refresh: bool) -> None:
        with self._lock:
            moment = time.monotonic()
            if refresh and moment - self._refreshed_at < REFRESH_SECONDS:
                refresh = False
            if not refresh and moment - self._loaded_at < CACHE_SECONDS:
                return
            if refresh:
                self._refreshed_at = moment
            self._loaded_at = moment
            rows = self._rows()
            self._secrets = {
                row["RowKey"].split("|", 1)[1]: str(row["signing_secret"])
                for row in rows
                if row["RowKey"].startswith("mailchimp|") and row.get("signing_secret")
            }
            user = next((row.get("user") for row in rows if row["RowKey"] == "whoami"), None)
            self._user = str(user).lower() if user else None

    def _rows(self) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self.storage.query(SYNC_STATE, "PartitionKey eq @p", {"p": PARTITION})]
        for row in rows:
            check_version(SYNC_STATE, row)
        return rows

    # ---- what register and remove write --------------------------------------------------------------
    def mailchimp_webhooks(self) -> dict[str, MailchimpWebhook]:
        return {
            row["RowKey"].split("|", 1)[1]: MailchimpWebhook(
                row["RowKey"].split("|", 1)[1],
                str(row.get("webhook_id") or ""),
                str(row.get("url") or ""),
                str(row.get("signing_secret") or ""),
                parse_time(row.get("created")),
            )
            for row in self._rows()
            if row["RowKey"].startswith("mailchimp|")
        }

    def save_mailchimp(self, hook: MailchimpWebhook) -> None:
        self._put(
            f"mailchimp|{hook.audience}",
            webhook_id=hook.webhook_id,
            url=hook.url,
            signing_secret=hook.signing_secret,
            created=hook.created or now(),
        )
        self._loaded_at = -1e9

    def forget_mailchimp(self, audience: str) -> None:
        self._delete(f"mailchimp|{audience}")
        self._delete(f"last|mailchimp|{audience}")
        self._loaded_at = -1e9

    def dataverse_endpoint(self) -> DataverseEndpoint | None:
        row = self.storage.get(SYNC_STATE, PARTITION, "dataverse")
        if not row:
            return None
        check_version(SYNC_STATE, row)
        return DataverseEndpoint(
            str(row.get("endpoint_id") or ""),
            list(json.loads(row.get("steps") or "[]")),
            str(row.get("url") or ""),
            parse_time(row.get("created")),
        )

    def save_dataverse(self, endpoint: DataverseEndpoint) -> None:
        self._put(
            "dataverse",
            endpoint_id=endpoint.endpoint_id,
            steps=json.dumps(endpoint.steps),
            url=endpoint.url,
            created=endpoint.created or now(),
        )

    def forget_dataverse(self) -> None:
        self._delete("dataverse")
        self._delete("last|dataverse|")

    def remember_user(self, user_id: str) -> None:
        self._put("whoami", user=user_id.lower())
        with self._lock:
            self._user = user_id.lower()

    # ---- deliveries ------------------------------------------------------------------------------------
    def delivered(self, side: str, audience: str, when: datetime) -> None:
        """The newest event applied from one registration (an audience's webhook, or the Dataverse endpoint)."""
        self._put(f"last|{side}|{audience}", at=when)

    def last_deliveries(self) -> dict[str, datetime]:
        """``"<side>|<audience>"`` -> when its newest event was applied."""
        return {
            row["RowKey"].split("|", 1)[1]: moment
            for row in self._rows()
            if row["RowKey"].startswith("last|") and (moment := parse_time(row.get("at"))) is not None
        }

    def _put(self, row: str, **values: Any) -> None:
        entity = {"PartitionKey": PARTITION, "RowKey": row, VERSION: STATE_VERSION, **values}
        self.storage.write(SYNC_STATE, [upsert(entity)])

    def _delete(self, row: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.storage.table(SYNC_STATE).delete_entity(PARTITION, row)
