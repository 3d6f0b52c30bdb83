"""Timer: starts a run for every link on the SYNC_SCHEDULE."""

import logging

import azure.functions as func

from shared import app as engine
from shared import telemetry

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(arg_name="timer", schedule="%SYNC_SCHEDULE%", run_on_startup=False, use_monitor=True)
def plan_sync(timer: func.TimerRequest) -> None:
    planned: list[engine.PlannedRun] = []
    try:
        planned = engine.plan_sync(engine.context(), trigger=telemetry.TRIGGER_TIMER)
    finally:
        # The schedule monitor found a missed tick (the app was down or stopped): say so even if planning failed.
        if timer.past_due:
            runs = ", ".join(f"{p.link} {p.run_id}" for p in planned if p.run_id) or "none"
            log.warning("the timer is past due: a scheduled run was missed; runs started now: %s", runs)


@bp.timer_trigger(arg_name="timer", schedule="%SYNC_NOW_SCHEDULE%", run_on_startup=False, use_monitor=False)
def sync_now(timer: func.TimerRequest) -> None:
    """Starts a run of every link whose row in Dynamics a user set to "Sync now" (one Dataverse read a tick)."""
    engine.sync_now(engine.context())
