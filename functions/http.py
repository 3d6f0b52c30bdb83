"""HTTP: POST /api/sync starts a run now (all links, or ?link=NAME / {"link": NAME}); GET /api/status answers what
every link's row in Dynamics says (function-key auth). The webhook routes GET|POST /api/webhooks/mailchimp and
POST /api/webhooks/dataverse are anonymous to the host: WEBHOOK_SECRET is their guard."""

import json

import azure.functions as func

from shared import app as engine
from shared import telemetry
from shared.settings import SettingsError

bp = func.Blueprint()


@bp.route(route="sync", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def start_sync(req: func.HttpRequest) -> func.HttpResponse:
    link = req.params.get("link")
    full = req.params.get("full", "").lower() in ("1", "true")
    if req.get_body():
        try:
            body = req.get_json()
        except ValueError:
            return _json(400, {"error": 'the body must be JSON, e.g. {"link": "newsletter"}'})
        link = body.get("link", link)
        full = bool(body.get("full", full))
    try:
        planned = engine.plan_sync(engine.context(), link_name=link, full=full, trigger=telemetry.TRIGGER_HTTP)
    except SettingsError as exc:
        return _json(404, {"error": str(exc)})
    runs = [{"link": p.link, "runId": p.run_id, "skipped": p.skipped or None} for p in planned]
    return _json(202, {"runs": runs})


@bp.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def link_status(req: func.HttpRequest) -> func.HttpResponse:
    """What every link's row in Dynamics says: state, started, finished, counts in words, error, next run."""
    return _json(200, {"links": engine.link_statuses(engine.context())})


@bp.route(route="webhooks/mailchimp", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def mailchimp_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """Mailchimp's validation GET and its deliveries: checked, enqueued on sync-events, answered at once."""
    reply = engine.receive_mailchimp(engine.context(), req.method, dict(req.params), dict(req.headers), req.get_body())
    return func.HttpResponse(reply.text, status_code=reply.status, mimetype="text/plain")


@bp.route(route="webhooks/dataverse", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def dataverse_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """A Dataverse webhook step's delivery (X-Consent-Bridge-Secret header): checked, enqueued, answered."""
    reply = engine.receive_dataverse(engine.context(), dict(req.headers), req.get_body())
    return func.HttpResponse(reply.text, status_code=reply.status, mimetype="text/plain")


def _json(status: int, body: dict) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")
