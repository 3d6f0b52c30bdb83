"""Drives the benchmark: a fresh local world per size, seeding, four measured runs, the figures.

The driver seeds and changes the emulators through their admin APIs and reads their call counts; each
sync runs in its own process (``bench.runner``), so the peak RSS measured is the sync's alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from bench import latency as latency_model
from bench import population as pop
from bench.model import TARGETS, Work, checks, explain, minimum
from emulators.world import API_KEY, LocalWorld

ROOT = Path(__file__).resolve().parent.parent
RUNS = ("initial", "settling", "incremental", "no-change", "idle")
BATCH_SUBSCRIBE_ROUTE = "/3.0/lists/{list_id}"
RUN_TIMEOUT = 3600.0  # seconds; a sync that takes longer is reported as failed, not waited for forever
REQUEST_LOG_SIZE = 2000  # the emulators keep the last 2,000 requests


def run_benchmark(
    records: int,
    scale: int,
    *,
    interval_minutes: float = 15.0,
    change_share: float = 0.01,
    tag: str | None = None,
    profile_dir: str | None = None,
    batch_size: int | None = None,
    interests: int = pop.DEFAULT_INTERESTS,
    say: Callable[[str], None] = lambda text: None,
    time_scales: dict[str, float] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """``time_scales`` set: both emulators run their latency models, each run at its scale (``--latency model``;
    ``""`` holds the scale of runs not named)."""
    sizes = [records] if scale <= 1 else [records, records * scale]
    link = {**pop.LINK, "tag": tag} if tag else dict(pop.LINK)
    result: dict[str, Any] = {
        "benchmark": {
            "records": records,
            "scale": scale,
            "sizes": sizes,
            "link": link,
            "interval_minutes": interval_minutes,
            "change_share": change_share,
            "batch_size": batch_size or 500,
            "interests": interests,
            "latency": "model" if time_scales else "off",
            "time_scales": time_scales,
            "workers": workers,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        "targets": TARGETS,
        "sizes": [],
    }
    for size in sizes:
        result["sizes"].append(
            bench_size(
                size,
                link,
                interval_minutes=interval_minutes,
                change_share=change_share,
                profile_dir=profile_dir,
                batch_size=batch_size,
                interests=interests,
                say=say,
                time_scales=time_scales,
                workers=workers,
            )
        )
    result["rss_growth_percent"] = rss_growth(result["sizes"])
    if time_scales:  # one object per run, for tools that read the latency figures
        result["runs"] = [
            {k: run[k] for k in ("run", "records", "wall_s", "bound_s", "calls", "ratio_to_bound", "throttled_429")}
            for size in result["sizes"]
            for run in size["runs"]
        ]
    return result


def bench_size(
    records: int,
    link: dict[str, str],
    *,
    interval_minutes: float,
    change_share: float,
    profile_dir: str | None,
    say: Callable[[str], None],
    batch_size: int | None = None,
    interests: int = pop.DEFAULT_INTERESTS,
    time_scales: dict[str, float] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    from shared.app import Context
    from shared.provision import provision
    from shared.settings import load_settings
    from shared.state.ledger import Ledger

    population = pop.Population(records, interests=interests)
    with LocalWorld() as world, tempfile.TemporaryDirectory(prefix="cbr-bench-") as workdir:
        say(f"[{records:,}] seeding")
        started = time.perf_counter()
        pop.seed(world, population)
        seeded = time.perf_counter() - started
        env = world.settings_env([link], **({"BATCH_SIZE": str(batch_size)} if batch_size else {}))
        settings = load_settings(env)
        ctx = Context.from_settings(settings)
        provision(settings, ctx.storage, ctx.dataverse)
        ledger = Ledger(ctx.storage)
        say(f"[{records:,}] seeded {records:,} records and {population.members:,} members in {seeded:.1f}s")
        size: dict[str, Any] = {
            "records": records,
            "members": population.members,
            "linked_members": sum(p.member_status is not None for p in population.people),
            "opted_out": sum(p.opted_out for p in population.people),
            "seed_seconds": round(seeded, 2),
            "workers": workers,
            "runs": [],
        }

        previous_start: tuple[datetime, datetime] | None = None
        for name in RUNS:
            if name == "incremental":  # people and users act halfway between two timer runs
                advance_clocks(world, interval_minutes * 30)
                size["changes"] = vars(pop.apply_changes(world, population, change_share))
                advance_clocks(world, interval_minutes * 30)
            elif name != "initial":
                advance_clocks(world, interval_minutes * 60)
            needed = to_read(world, ctx.dataverse, link, previous_start, preferences=interests > 0)
            previous_start = clocks(world)
            say(f"[{records:,}] {name} run")
            profile = str(Path(profile_dir) / f"{records}-{name}.prof") if profile_dir else None
            run = measure_run(
                world,
                env,
                link,
                name,
                Path(workdir),
                ledger,
                needed=needed,
                profile=profile,
                static_incremental=name != "initial",
                interests=interests,
                time_scale=(time_scales.get(name, time_scales[""]) if time_scales else None),
                workers=workers,
            )
            say(
                f"[{records:,}] {name}: {run['wall_seconds']:.1f}s, {run['api_calls']['total']} API calls "
                f"(minimum {run['minimum']['total']}), peak RSS {run['peak_rss_mb']:.0f} MB"
            )
            run["targets"] = checks(run, records)
            size["runs"].append(run)
    return size


def advance_clocks(world: Any, seconds: float) -> None:
    """Time passes between timer runs on both services alike."""
    if seconds > 0:
        world.mailchimp_admin.advance_clock(seconds)
        world.dataverse_admin.advance_clock(seconds)


def clocks(world: Any) -> tuple[datetime, datetime]:
    """Now on Mailchimp and on Dataverse, each by its own clock."""
    return (
        datetime.fromisoformat(world.mailchimp_admin.call("GET", "clock")["now"]),
        datetime.fromisoformat(world.dataverse_admin.call("GET", "clock")["now"]),
    )


def to_read(
    world: Any,
    dataverse: Any,
    link: dict[str, str],
    since: tuple[datetime, datetime] | None,
    *,
    preferences: bool = False,
) -> tuple[int, int, int]:
    """(members, records, preference rows) changed since the previous run started (everything before the first
    run): what the next run has to read. Asked before the run's call counts are reset, so these reads are not
    counted."""
    params = {"count": "1", "fields": "total_items"}
    list_filter = f"listcontact_association/any(l:l/listid eq {link['marketingListId']})"
    if since is not None:
        # Mailchimp's bound is exclusive and whole-second; Dataverse's ge is inclusive
        params["since_last_changed"] = (since[0].replace(microsecond=0) - timedelta(seconds=1)).isoformat()
        list_filter += f" and modifiedon ge {since[1]:%Y-%m-%dT%H:%M:%SZ}"
    answer = requests.get(
        f"{world.mailchimp.url}/3.0/lists/{link['audienceId']}/members",
        params=params,
        auth=("bench", API_KEY),
        timeout=120,
    )
    answer.raise_for_status()
    records = sum(len(page) for page in dataverse.iter_pages("contacts", select=["contactid"], filter=list_filter))
    rows = 0
    if preferences:
        row_filter = "_cbr_contact_value ne null" + (
            f" and modifiedon ge {since[1]:%Y-%m-%dT%H:%M:%SZ}" if since else ""
        )
        rows = sum(
            len(page)
            for page in dataverse.iter_pages(
                "cbr_preferencesubscriptions", select=["cbr_preferencesubscriptionid"], filter=row_filter
            )
        )
    return int(answer.json()["total_items"]), records, rows


def measure_run(
    world: Any,
    env: dict[str, str],
    link: dict[str, str],
    name: str,
    workdir: Path,
    ledger: Any,
    *,
    needed: tuple[int, int, int],
    profile: str | None,
    static_incremental: bool,
    interests: int = 0,
    time_scale: float | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    mailchimp, dataverse = world.mailchimp_admin, world.dataverse_admin
    if time_scale:
        latency_model.configure(world, time_scale)
        latency_model.reset(world)
    mailchimp.reset_calls()
    dataverse.reset_calls()
    mailchimp.clear_requests()
    parts_before = dataverse.call("GET", "batch-parts")["parts"]
    bulk_before = dataverse.call("GET", "bulk-targets")["targets"]
    status_before = status_writes(ledger, link["name"])
    load_before = os.getloadavg()
    out = workdir / f"{name}.json"
    command = [sys.executable, "-m", "bench.runner", "--out", str(out), "--workers", str(workers)]
    command += ["--profile", profile] if profile else []
    launched = datetime.now(UTC)
    started = time.perf_counter()
    with open(workdir / f"{name}.stderr", "w+") as errors:
        try:
            process = subprocess.run(
                command,
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=errors,
                timeout=RUN_TIMEOUT,
                check=False,
            )
            code = process.returncode
        except subprocess.TimeoutExpired:
            code = -1
        errors.seek(0)
        stderr = errors.read()[-4000:]
    process_seconds = time.perf_counter() - started
    if code != 0 or not out.exists():
        raise RuntimeError(f"the {name} run's process failed (exit {code}):\n{stderr}")
    measured = json.loads(out.read_text())

    mailchimp_calls = mailchimp.calls()
    dataverse_calls = dataverse.calls()
    parts_after = dataverse.call("GET", "batch-parts")["parts"]
    logged = mailchimp.requests()
    members_sent = sum(
        len((r.get("body") or {}).get("members") or [])
        for r in logged
        if r["method"] == "POST" and r["route"] == BATCH_SUBSCRIBE_ROUTE
    )
    patches = sum(
        count - parts_before.get(route, 0) for route, count in parts_after.items() if route.startswith("PATCH ")
    )
    # records written by UpdateMultiple are record writes too (one bulk message is one call)
    bulk_after = dataverse.call("GET", "bulk-targets")["targets"]
    patches += sum(
        count - bulk_before.get(key, 0) for key, count in bulk_after.items() if key.startswith("UpdateMultiple ")
    )
    # the link's status row in Dynamics: its PATCHes are parts of $batch calls of their own, not record writes
    status = status_writes(ledger, link["name"]) - status_before
    latest = ledger.latest_runs(link["name"], 1)
    if not latest or latest[0].started < launched.replace(microsecond=0):
        raise RuntimeError(f"the {name} run recorded no run of link {link['name']}:\n{measured['summary']}\n{stderr}")
    summary = latest[0]
    counts = dict(summary.counts)
    # the catalog mirror's upserts are PATCH parts of their own $batch; the subscription rows share reconcile's
    catalog_written = counts.get("catalog_changes", 0)
    row_patches = sum(
        counts.get(k, 0) for k in ("preference_rows_written", "preference_rows_stamped", "preference_rows_refused")
    )
    preference_members = counts.get("preference_members_written", 0)
    common = {
        "static_incremental": static_incremental,
        "interests": interests > 0,
        "catalog_categories": len(pop.interest_categories(interests)) if counts.get("catalog_reads") else None,
        "catalog_written": catalog_written,
        "preference_rows_written": row_patches,
        "preference_members_written": preference_members,
        # members whose status changed, and those written only for what features added (interests, merge fields)
        "members_written": counts.get("mailchimp_writes", 0) + counts.get("members_written_by_steps", 0),
        "merge_field_reads": counts.get("merge_field_reads", 0),
        "archived_read": counts.get("mailchimp_archived_read", 0) if counts.get("archived_reads") else None,
        "records_written": patches - catalog_written - status,
        "status_writes": status,
        "membership_rows_written": counts.get("membership_rows_written", 0),
        "history_rows_written": counts.get("consent_history_rows_written", 0),
    }
    work = Work(members_read=needed[0], records_read=needed[1], preference_rows_read=needed[2], **common)
    as_read = Work(
        members_read=counts.get("mailchimp_read", 0),
        records_read=counts.get("dataverse_read", 0),
        preference_rows_read=counts.get("preference_rows_read", 0),
        **common,
    )
    low, low_as_read = minimum(work), minimum(as_read)
    total = sum(mailchimp_calls.values()) + sum(dataverse_calls.values())
    preference_part = measure_preferences(mailchimp_calls, counts, low)
    storage_total = sum(measured["storage_calls"].values())
    wall = measured["wall_seconds"]
    on_model = latency_model.measure(world, time_scale, round(wall, 2)) if time_scale else None
    return {
        "run": name,
        **(
            {
                "records": as_read.records_read,
                "wall_s": round(wall, 2),
                "bound_s": on_model["bound_s"],
                "calls": total,
                "ratio_to_bound": on_model["ratio"],
                "throttled_429": on_model["throttled_429"],
                "latency": on_model,
            }
            if on_model
            else {}
        ),
        "exit_code": measured["exit_code"],
        "status": summary.status,
        "full_pass": name == "initial",
        "wall_seconds": round(wall, 2),
        "process_seconds": round(process_seconds, 2),
        "cpu_seconds": round(measured["cpu_seconds"], 2),
        "records_per_second": round(as_read.records_read / wall, 1) if wall else 0.0,
        "peak_rss_mb": round(measured["peak_rss_kb"] / 1024, 1),
        "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "api_calls": {
            "mailchimp": {"endpoints": dict(sorted(mailchimp_calls.items())), "total": sum(mailchimp_calls.values())},
            "dataverse": {"endpoints": dict(sorted(dataverse_calls.items())), "total": sum(dataverse_calls.values())},
            "total": total,
        },
        "work": {
            "members_to_read": work.members_read,
            "members_read": as_read.members_read,
            "members_written": work.members_written,
            "records_to_read": work.records_read,
            "records_read": as_read.records_read,
            "records_written": patches - status,
            "status_writes": status,
            "static_incremental": static_incremental,
            "members_sent_in_batch_subscribes": members_sent,
            "members_sent_complete": len(logged) < REQUEST_LOG_SIZE,
            "record_groups_written": counts.get("dynamics_writes", 0),
            "batches": summary.batches,
        },
        "minimum": {**low.to_json(), "explained": explain(work, low)},
        "ratio": round(total / low.total, 2),
        "preferences": preference_part,
        "memberships": {
            "calls": counts.get("membership_calls_dataverse", 0),
            "minimum": low.memberships,
            "membership_rows_written": counts.get("membership_rows_written", 0),
            "history_rows_written": counts.get("consent_history_rows_written", 0),
        },
        "minimum_as_read": {**low_as_read.to_json(), "explained": explain(as_read, low_as_read)},
        "ratio_as_read": round(total / low_as_read.total, 2),
        "storage": {
            "operations": dict(sorted(measured["storage_calls"].items())),
            "total": storage_total,
            "engine_counter": counts.get("storage_calls", 0),
        },
        "counts": counts,
        "summary": measured["summary"].strip(),
        **({"log_tail": stderr} if summary.status != "completed" else {}),
    }


def status_writes(ledger: Any, link: str) -> int:
    """How many times the sync has written the link's status row in Dynamics (its own count, in SyncState)."""
    row = ledger.storage.get("SyncState", link, "status") or {}
    return int(row.get("writes") or 0)


def measure_preferences(mailchimp_calls: dict[str, int], counts: dict[str, int], low: Any) -> dict[str, Any]:
    """The calls the preference part of a run made, against its minimum.

    The sync counts them where it makes them (the Dataverse emulator names no table in its routes): catalog
    reads and writes, pages of subscription rows, and the batch subscribe and $batch calls that exist only
    because interests or rows were added to the status sync's. Mailchimp's interest-category routes, measured
    on the emulator, cross-check the catalog part."""
    mailchimp = counts.get("preference_calls_mailchimp", 0)
    dataverse = counts.get("preference_calls_dataverse", 0)
    calls = mailchimp + dataverse
    return {
        "calls": calls,
        "minimum": low.preferences,
        "ratio": round(calls / low.preferences, 2) if low.preferences else None,
        "mailchimp": mailchimp,
        "dataverse": dataverse,
        "mailchimp_catalog_measured": sum(n for route, n in mailchimp_calls.items() if "/interest-categories" in route),
        "rows_read": counts.get("preference_rows_read", 0),
        "rows_written": counts.get("preference_rows_written", 0),
        "rows_stamped": counts.get("preference_rows_stamped", 0),
        "members_written": counts.get("preference_members_written", 0),
        "catalog_changes": counts.get("catalog_changes", 0),
    }


def rss_growth(sizes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Peak RSS at the largest size against the smallest, per run and for the worst run."""
    if len(sizes) < 2:
        return None
    small, large = sizes[0], sizes[-1]
    per_run = {
        s["run"]: round((b["peak_rss_mb"] / s["peak_rss_mb"] - 1) * 100, 1)
        for s, b in zip(small["runs"], large["runs"], strict=True)
    }
    worst_small = max(r["peak_rss_mb"] for r in small["runs"])
    worst_large = max(r["peak_rss_mb"] for r in large["runs"])
    peak = round((worst_large / worst_small - 1) * 100, 1)
    return {
        "from_records": small["records"],
        "to_records": large["records"],
        "per_run": per_run,
        "peak": peak,
        "target": f"< {TARGETS['rss_growth_percent']:g} %",
        "met": peak < TARGETS["rss_growth_percent"],
    }
