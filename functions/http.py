"""HTTP: POST /api/sync starts a run now (all links, or ?link=NAME / {"link": NAME}); GET /api/status answers what
every link's row in Dynamics says. Function-key auth."""

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


def _json(status: int, body: dict) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")
