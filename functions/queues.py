"""Queue triggers: scan a link, reconcile a batch, apply real-time events, and keep what the poison queues
receive."""

import json

import azure.functions as func

from shared import app as engine

bp = func.Blueprint()


def _body(message: func.QueueMessage) -> dict:
    return json.loads(message.get_body())


@bp.queue_trigger(arg_name="message", queue_name="sync-links", connection="AzureWebJobsStorage")
def scan_link(message: func.QueueMessage) -> None:
    engine.scan_link(engine.context(), _body(message))


@bp.queue_trigger(arg_name="message", queue_name="sync-batches", connection="AzureWebJobsStorage")
def reconcile_batch(message: func.QueueMessage) -> None:
    engine.reconcile_batch(engine.context(), _body(message), message.dequeue_count or 1)


@bp.queue_trigger(arg_name="message", queue_name="sync-links-poison", connection="AzureWebJobsStorage")
def dead_letter_link(message: func.QueueMessage) -> None:
    engine.dead_letter_link(engine.context(), _body(message))


@bp.queue_trigger(arg_name="message", queue_name="sync-batches-poison", connection="AzureWebJobsStorage")
def dead_letter_batch(message: func.QueueMessage) -> None:
    engine.dead_letter_batch(engine.context(), _body(message))


@bp.queue_trigger(arg_name="message", queue_name="sync-events", connection="AzureWebJobsStorage")
def handle_events(message: func.QueueMessage) -> None:
    engine.handle_events(engine.context(), _body(message), message.dequeue_count or 1)


@bp.queue_trigger(arg_name="message", queue_name="sync-events-poison", connection="AzureWebJobsStorage")
def dead_letter_event(message: func.QueueMessage) -> None:
    engine.dead_letter_event(engine.context(), _body(message))
