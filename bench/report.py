"""The benchmark's figures as a readable table, with the targets beside them."""

from __future__ import annotations

from typing import Any

from bench.latency import HOW_THE_BOUND_IS_COMPUTED, format_runs
from bench.model import HOW_N_IS_DERIVED

WHAT_EACH_RUN_IS = {
    "initial": "first run: a full pass, both sides meet",
    "settling": "re-reads the initial run's own writes (its echoes)",
    "incremental": "after {changes}",
    "no-change": "nothing changed since the incremental run (it re-reads that run's own writes)",
    "idle": "a settled link: nothing changed, and the previous run wrote nothing",
}


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def format_report(result: dict[str, Any]) -> str:
    bench = result["benchmark"]
    tag = f"tag {bench['link']['tag']}" if bench["link"].get("tag") else "no tag"
    lines = [
        "Consent Bridge sync benchmark",
        f"link: {bench['link']['name']} (static contact list {bench['link']['marketingListId']} <-> audience "
        f"{bench['link']['audienceId']}, {tag}); {bench['interval_minutes']:g} minutes pass on both services "
        f"between runs (the changes before the incremental run are made halfway); Python {bench['python']}, "
        f"{bench['cpus']} CPUs",
        "",
    ]
    for size in result["sizes"]:
        lines += format_size(size)
        lines += format_runs(size)
    growth = result.get("rss_growth_percent")
    if growth:
        per_run = ", ".join(f"{name} {value:+.1f} %" for name, value in growth["per_run"].items())
        lines += [
            f"Peak RSS growth from {growth['from_records']:,} to {growth['to_records']:,} records: "
            f"{growth['peak']:+.1f} % (worst run against worst run; target {growth['target']}: "
            f"{verdict(growth['met'])}); per run: {per_run}",
            "",
        ]
    lines += ["How the minimum is computed:", *wrap(HOW_N_IS_DERIVED, 110, "  "), ""]
    if bench.get("latency") == "model":
        lines += ["How the bound is computed:", *wrap(HOW_THE_BOUND_IS_COMPUTED, 110, "  "), ""]
    lines += [
        "Storage: every request the sync process sent to Table Storage and Queues (Azurite), counted in that "
        "process; 'engine' is the run's own storage_calls counter (identity map and audit only)."
    ]
    return "\n".join(lines)


def format_size(size: dict[str, Any]) -> list[str]:
    records = size["records"]
    lines = [
        f"== {records:,} records: {size['linked_members']:,} already members, {size['members']:,} members in the "
        f"audience, {size['opted_out']:,} opted out; seeded in {size['seed_seconds']:.1f} s ==",
    ]
    changes = size.get("changes")
    header = (
        f"{'run':<12}{'wall s':>8}{'cpu s':>7}{'rec/s':>9}{'RSS MB':>8}{'MC':>6}{'DV':>6}{'API':>7}"
        f"{'min':>6}{'ratio':>7}{'ratio read':>11}{'storage':>9}{'load':>11}  status"
    )
    lines += [header, "-" * len(header)]
    for run in size["runs"]:
        load = f"{run['load_average'][0]:.1f}→{run['load_average'][1]:.1f}"
        lines.append(
            f"{run['run']:<12}{run['wall_seconds']:>8.1f}{run['cpu_seconds']:>7.1f}{run['records_per_second']:>9,.0f}"
            f"{run['peak_rss_mb']:>8.0f}{run['api_calls']['mailchimp']['total']:>6}"
            f"{run['api_calls']['dataverse']['total']:>6}{run['api_calls']['total']:>7}{run['minimum']['total']:>6}"
            f"{run['ratio']:>7.2f}{run['ratio_as_read']:>11.2f}{run['storage']['total']:>9,}{load:>11}"
            f"  {run['status']}"
        )
    lines.append("")
    for run in size["runs"]:
        what = WHAT_EACH_RUN_IS[run["run"]]
        if run["run"] == "incremental" and changes:
            what = what.format(
                changes=(
                    f"{changes['opt_outs']:,} opt-outs and {changes['opt_ins']:,} opt-ins in Dynamics, "
                    f"{changes['unsubscribes']:,} unsubscribes and {changes['resubscribes']:,} "
                    "resubscribes in Mailchimp"
                )
            )
        work = run["work"]
        sent = f"{work['members_sent_in_batch_subscribes']:,}" + ("" if work["members_sent_complete"] else " or more")
        lines += [
            f"{run['run']} ({what}): {run['wall_seconds']:.1f} s",
            f"  work: had to read {work['members_to_read']:,} members and {work['records_to_read']:,} records, "
            f"read {work['members_read']:,} and {work['records_read']:,}; changed {work['members_written']:,} members "
            f"({sent} sent in batch subscribes) and {work['records_written']:,} records "
            f"({work['record_groups_written']:,} members' records); {work['batches']} batches",
            f"  minimum: {run['minimum']['explained']}; ratio {run['ratio']:.2f}",
            f"  memberships: {run['memberships']['membership_rows_written']:,} membership rows and "
            f"{run['memberships']['history_rows_written']:,} consent history rows written, "
            f"{run['memberships']['calls']} call(s) of their own (minimum {run['memberships']['minimum']})",
            f"  minimum as read: {run['minimum_as_read']['explained']}; ratio {run['ratio_as_read']:.2f}",
            "  targets: " + "; ".join(f"{c['target']}: {verdict(c['met'])}" for c in run["targets"]),
        ]
        for side in ("mailchimp", "dataverse"):
            calls = run["api_calls"][side]
            endpoints = ", ".join(f"{name} {count:,}" for name, count in calls["endpoints"].items()) or "none"
            lines.append(f"  {side} {calls['total']:,}: {endpoints}")
        storage = run["storage"]
        top = sorted(storage["operations"].items(), key=lambda kv: -kv[1])[:8]
        lines.append(
            f"  storage {storage['total']:,} (engine {storage['engine_counter']:,}): "
            + ", ".join(f"{name} {count:,}" for name, count in top)
            + (", ..." if len(storage["operations"]) > len(top) else "")
        )
        if run["status"] != "completed":
            lines.append(f"  the run ended {run['status']}: {run['summary']}")
            lines += [f"    {line}" for line in run.get("log_tail", "").splitlines()[-8:]]
    lines.append("")
    return lines


def wrap(text: str, width: int, indent: str) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(indent + current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(indent + current)
    return lines
