"""Timer: starts a run for every link on the SYNC_SCHEDULE."""

import azure.functions as func

from shared import app as engine
from shared import telemetry

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule="%SYNC_SCHEDULE%", run_on_startup=False, use_monitor=True)
def plan_sync(timer: func.TimerRequest) -> None:
    engine.plan_sync(engine.context(), trigger=telemetry.TRIGGER_TIMER)
