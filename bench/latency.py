"""The benchmark on the latency model: wall time against the bound the services' limits allow.

With ``--latency model`` both emulators answer after the server time their latency models give each request
(``emulators/dataverse/latency.py``, ``emulators/mailchimp/latency.py``), every time multiplied by the time
scale. Each run then reports how much server time it used on each side and the bound that time allows.
"""

from __future__ import annotations

from typing import Any

DATAVERSE_CONCURRENT = 52  # service protection: concurrent requests per user
WINDOW_SECONDS = 300.0  # service protection's sliding window
BUDGET_SECONDS = 1200.0  # execution time per user per window (1,200,000 ms)
MAILCHIMP_CONNECTIONS = 10  # simultaneous connections per user

HOW_THE_BOUND_IS_COMPUTED = (
    "The bound is the shortest time the services' limits allow for the server time the run used (the latency "
    "models' own sums, in model seconds, then multiplied by the time scale): on Dataverse the larger of its total "
    "server time over the usable parallelism (the x-ms-dop-hint it sends, at most 52 concurrent requests) and "
    "what the execution-time budget allows (1,200 s per 300 s sliding window: 300 s x (T / 1,200 s - 1) for a "
    "total T); on Mailchimp its total server time over its 10 connections; the run's bound is the larger of the "
    "two services' bounds. A run cannot be faster than its bound, whatever it does in parallel; the ratio wall / "
    "bound says how close it comes. 429s are the service-protection and connection refusals the emulators "
    "answered during the run; the sync waited each out (Retry-After on Dataverse, backoff on Mailchimp)."
)


def parse_scales(text: str) -> dict[str, float]:
    """``--time-scale``: one number for every run, or per run (``0.05,incremental=1``: 1 for the incremental run,
    0.05 for the others); the default run's scale is under ``""``."""
    scales: dict[str, float] = {"": 0.05}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.rpartition("=")
        try:
            scale = float(value)
        except ValueError:
            raise ValueError(f"expected a number or RUN=NUMBER, got {item!r}") from None
        if not 0 < scale <= 1:
            raise ValueError(f"a time scale is above 0 and at most 1, got {item!r}")
        scales[name.strip()] = scale
    return scales


def configure(world: Any, time_scale: float) -> None:
    """Switches both emulators' latency models on."""
    for admin in (world.mailchimp_admin, world.dataverse_admin):
        admin.call("POST", "latency", {"enabled": True, "timeScale": time_scale})


def reset(world: Any) -> None:
    for admin in (world.mailchimp_admin, world.dataverse_admin):
        admin.call("DELETE", "latency/counts")


def bound(dataverse_seconds: float, dop_hint: int, mailchimp_seconds: float) -> dict[str, float]:
    """The bound of each service and of the run, in model seconds."""
    parallel = max(1, min(dop_hint, DATAVERSE_CONCURRENT))
    over_parallel = dataverse_seconds / parallel
    budget = max(0.0, WINDOW_SECONDS * (dataverse_seconds / BUDGET_SECONDS - 1))
    dataverse = max(over_parallel, budget)
    mailchimp = mailchimp_seconds / MAILCHIMP_CONNECTIONS
    return {
        "dataverse_parallelism": parallel,
        "dataverse_over_parallelism_s": over_parallel,
        "dataverse_budget_s": budget,
        "dataverse_s": dataverse,
        "mailchimp_s": mailchimp,
        "run_s": max(dataverse, mailchimp),
    }


def measure(world: Any, time_scale: float, wall_s: float) -> dict[str, Any]:
    """What the run cost on the latency models, its bound and the ratio of its wall time to it."""
    dataverse = world.dataverse_admin.call("GET", "latency")
    mailchimp = world.mailchimp_admin.call("GET", "latency")
    parts = bound(dataverse["totalServerSeconds"], int(dataverse["dopHint"]), mailchimp["totalServerSeconds"])
    bound_s = round(parts["run_s"] * time_scale, 3)
    return {
        "time_scale": time_scale,
        "dataverse_server_s": dataverse["totalServerSeconds"],
        "dataverse_by_kind_s": dataverse["serverSeconds"],
        "dataverse_requests_by_kind": dataverse["requests"],
        "mailchimp_server_s": mailchimp["totalServerSeconds"],
        "mailchimp_by_kind_s": mailchimp["serverSeconds"],
        "dop_hint": dataverse["dopHint"],
        "bound_model_s": {k: round(v, 3) for k, v in parts.items()},
        "bound_s": bound_s,
        "ratio": round(wall_s / bound_s, 2) if bound_s else None,
        "throttled_429": {"dataverse": dataverse["throttled"], "mailchimp": mailchimp["throttled"]},
    }


def format_runs(size: dict[str, Any]) -> list[str]:
    """The latency table of one size."""
    runs = [r for r in size["runs"] if r.get("latency")]
    if not runs:
        return []
    lines = [
        f"On the latency model, --workers {size.get('workers', 1)} (scale: seconds per modelled second; wall and "
        "bound in real seconds, server time in modelled seconds):",
    ]
    header = (
        f"{'run':<12}{'records':>9}{'scale':>7}{'wall s':>9}{'bound s':>9}{'ratio':>7}{'DV srv s':>10}"
        f"{'MC srv s':>10}{'DOP':>5}{'calls':>7}{'429s':>6}  bound from"
    )
    lines += [header, "-" * len(header)]
    for run in runs:
        latency = run["latency"]
        parts = latency["bound_model_s"]
        side = "Dataverse" if parts["dataverse_s"] >= parts["mailchimp_s"] else "Mailchimp"
        if side == "Dataverse" and parts["dataverse_budget_s"] > parts["dataverse_over_parallelism_s"]:
            side += " budget"
        throttled = latency["throttled_429"]["dataverse"] + latency["throttled_429"]["mailchimp"]
        ratio = f"{latency['ratio']:.2f}" if latency["ratio"] is not None else "-"
        lines.append(
            f"{run['run']:<12}{run['records']:>9,}{latency['time_scale']:>7g}{run['wall_s']:>9.1f}"
            f"{run['bound_s']:>9.1f}{ratio:>7}"
            f"{latency['dataverse_server_s']:>10.1f}{latency['mailchimp_server_s']:>10.1f}{latency['dop_hint']:>5}"
            f"{run['calls']:>7}{throttled:>6}  {side}"
        )
    lines.append("")
    return lines
