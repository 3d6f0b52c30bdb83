"""The webhook routes through the decorated functions with real func.HttpRequest objects: secrets, signatures,
bodies, what is enqueued, and the events queue trigger and its poison queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import azure.functions as func
import pytest

from shared import app as engine
from shared.adapters.storage import EVENTS_QUEUE, poison
from shared.features.realtime.deliveries import sign
from shared.features.realtime.registry import MailchimpWebhook, WebhookRegistry
from shared.rules.addresses import member_hash
from tests.features.realtime.support import SECRET, realtime_world
from tests.functions.test_functions import queue_message, user_function
from tests.sync_world import contact, member

SIGNING = "signing-secret-of-the-audience"


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite, monkeypatch):
    world = realtime_world(mailchimp_emulator, dataverse_emulator, azurite, tag=None)
    for key, value in world.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(engine, "_context", None)
    return world


def delivery(world, email: str = "person@example.org", audience: str | None = None) -> bytes:
    return urlencode(
        {
            "type": "unsubscribe",
            "fired_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "data[list_id]": audience or world.audience,
            "data[email]": email,
            "data[reason]": "manual",
        }
    ).encode()


def mailchimp(body: bytes = b"", *, method: str = "POST", secret: str | None = SECRET, headers=None):
    params = {"secret": secret} if secret is not None else {}
    request = func.HttpRequest(method, "/api/webhooks/mailchimp", params=params, body=body, headers=headers or {})
    return user_function("mailchimp_webhook")(request)


def dataverse(context: dict, secret: str | None = SECRET):
    headers = {"X-Consent-Bridge-Secret": secret} if secret is not None else {}
    request = func.HttpRequest("POST", "/api/webhooks/dataverse", body=json.dumps(context).encode(), headers=headers)
    return user_function("dataverse_webhook")(request)


def queued() -> int:
    return engine.context().storage.queue_length(EVENTS_QUEUE)


def test_the_validation_get_and_a_delivery_with_the_secret_are_answered_200(world):
    assert mailchimp(method="GET").status_code == 200
    response = mailchimp(delivery(world))
    assert response.status_code == 200 and queued() == 1
    [message] = engine.context().storage.receive(EVENTS_QUEUE, visibility_timeout=1)
    body = json.loads(message.content)
    assert body["h"] == member_hash("person@example.org") and b"person" not in message.content


@pytest.mark.parametrize("secret", [None, "", SECRET[:-1], SECRET + "x"])
def test_a_wrong_or_missing_secret_is_refused_and_nothing_is_queued(world, secret):
    assert mailchimp(method="GET", secret=secret).status_code == 401
    assert mailchimp(delivery(world), secret=secret).status_code == 401
    assert queued() == 0


def test_an_unreadable_body_is_400_and_an_unused_audience_is_ignored(world):
    assert mailchimp(b"type=opened&data[list_id]=x").status_code == 400
    assert mailchimp(b'{"json": true}').status_code == 400
    ignored = mailchimp(delivery(world, audience="zz99nolink"))
    assert ignored.status_code == 200 and b"ignored" in ignored.get_body()
    assert queued() == 0


def test_a_signed_audience_refuses_forged_unsigned_and_stale_deliveries(world):
    WebhookRegistry(engine.context().storage).save_mailchimp(
        MailchimpWebhook(world.audience, "wh1", "http://127.0.0.1/api/webhooks/mailchimp", SIGNING)
    )
    engine._context = None  # a fresh process: the registry is read anew
    body = delivery(world)
    now = datetime.now(UTC)
    refused = [
        {},  # unsigned, though the audience's webhook signs
        {"X-Mailchimp-Signature": sign("forged", body, now)},
        {"X-Mailchimp-Signature": sign(SIGNING, body, now - timedelta(minutes=6))},
        {"X-Mailchimp-Signature": sign(SIGNING, body + b"&x=1", now)},
    ]
    for headers in refused:
        assert mailchimp(body, headers=headers).status_code == 401
    assert queued() == 0
    assert mailchimp(body, headers={"X-Mailchimp-Signature": sign(SIGNING, body, now)}).status_code == 200
    assert queued() == 1


def test_dataverse_deliveries_need_the_header_and_echoes_are_dropped(world):
    context = {
        "MessageName": "Update",
        "PrimaryEntityName": "contact",
        "PrimaryEntityId": "7d6f1c0a-0000-4000-8000-000000000001",
        "InitiatingUserId": "a1b2c3d4-0000-4000-8000-000000000002",
        "OperationCreatedOn": "/Date(1772366400000)/",
    }
    assert dataverse(context, secret=None).status_code == 401
    assert dataverse(context, secret="wrong-" + SECRET).status_code == 401
    assert dataverse({"MessageName": "Update"}).status_code == 400
    assert dataverse({**context, "PrimaryEntityName": "opportunity"}).status_code == 200
    assert queued() == 0
    assert dataverse(context).status_code == 200 and queued() == 1
    WebhookRegistry(engine.context().storage).remember_user(context["InitiatingUserId"])
    engine._context = None
    echo = dataverse(context)
    assert echo.status_code == 200 and b"own write" in echo.get_body()
    assert queued() == 1


def test_a_queue_failure_answers_503_so_that_mailchimp_retries(world, monkeypatch):
    ctx = engine.context()

    def refuse(*_args, **_kwargs):
        raise ConnectionError("storage is unreachable")

    monkeypatch.setattr(ctx.storage, "send", refuse)
    assert mailchimp(delivery(world)).status_code == 503


def test_the_events_trigger_applies_and_its_poison_queue_keeps_the_member(world):
    person = contact("person@example.org")
    world.seed([person], [member("person@example.org")])
    assert world.sync()[0] == 0
    world.mailchimp.admin.call(
        "POST", "people/unsubscribe", {"list_id": world.audience, "email_address": "person@example.org"}
    )
    assert mailchimp(delivery(world)).status_code == 200
    ctx = engine.context()
    user_function("handle_events")(queue_message(EVENTS_QUEUE, ctx))
    assert world.records()[person["contactid"]]["donotbulkemail"] is True
    ctx.storage.send(poison(EVENTS_QUEUE), {"v": 1, "s": "m", "a": world.audience, "h": "0" * 32, "t": "unsubscribe"})
    user_function("dead_letter_event")(queue_message(poison(EVENTS_QUEUE), ctx))
    [retry] = ctx.ledger.pending_retries(world.link)
    assert json.loads(retry["groups"])[0][0] == "0" * 32
