"""Campaign activity at scale: ``python -m bench.campaign [--recipients N] [--json]``.

Builds the local world (Azurite and both emulators in their own processes), seeds N contacts in one static
marketing list and N members (95 % of them the contacts, 5 % in Mailchimp only), lets a first sync build the
identity map and a second one settle (it reads the first one's writes back), then sends one campaign to everyone
and measures three syncs, each in its own process:

- "first read": the campaign's first pass (40 % opened, a tenth of those three times, 8 % clicked, 1 % soft
  and 0.5 % hard bounces, 0.3 % unsubscribed), with the status changes the bounces and unsubscribes cause;
- "later read": 15 minutes on, 5 % more opens and 1 % more clicks: email-activity ``since`` the first read;
- "nothing new": 15 minutes on, no activity: the report is read and nothing else.

For each it prints the API calls per endpoint, the efficiency model's minimum and the ratio, the wall time and
the sync process's peak RSS, with RSS samples taken while it streamed (memory stays flat: pages are written as
they are read, only the link's record index grows with the list).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from math import ceil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LIST_ID = "3b7f2c1e-5d4a-4e6b-9c8d-7a6b5c4d3e2f"
AUDIENCE = "c4mp41gn01"
LINK = {"name": "campaigns", "marketingListId": LIST_ID, "audienceId": AUDIENCE}
CAMPAIGN = "bench-campaign"
CHUNK = 10_000  # rows or events per admin call
MAILCHIMP_PAGE, DATAVERSE_WRITE, DATAVERSE_READ, READ_BY_ID = 1000, 1000, 5000, 1000
RATIO_MAX = 1.25
HOW_THE_MINIMUM_IS_COUNTED = (
    "Campaign work: 1 GET /campaigns per link + 1 GET /reports/{id} per campaign read (none when the run is "
    "quiet and the campaign list shows no new opens or clicks) + ⌈recipients/1,000⌉ "
    "sent-to pages on the first read + ⌈members returned by email-activity/1,000⌉ (everyone on the first read; "
    "those with events since the last read later, counted on the emulator before the run) + ⌈unsubscribes/1,000⌉ "
    "when the report's count grew + ⌈engagement rows to read back/1,000⌉ on later reads (rows are read by id; "
    "1,000 ids fill the 64 KB a GET may take inside $batch) + ⌈rows to write/1,000⌉ $batch requests, each row "
    "once (the campaign row when its totals changed, and on the first read one row per recipient in Dynamics). "
    "Status work of the same run (the members the bounces and unsubscribes changed), as design.md's model counts "
    "it: ⌈members changed/1,000⌉ reads (at least 1) + ⌈status writes/500⌉ + 1 list definition + ⌈records changed/"
    "5,000⌉ reads (at least 1) + 1 new-memberships read + ⌈records written/1,000⌉."
)


# ---- the child: one sync, with RSS sampled while it runs ----------------------------------------------


def child(out: str) -> int:
    from shared.app import Context
    from shared.cli import run_sync
    from shared.settings import load_settings

    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    started = time.perf_counter()

    def sample() -> None:
        while not stop.wait(0.25):
            samples.append((round(time.perf_counter() - started, 2), _rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ctx = Context.from_settings(load_settings(dict(os.environ)))
    summary = _Capture()
    code = run_sync(ctx, summary, progress=lambda _: None)
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    Path(out).write_text(
        json.dumps(
            {
                "exit_code": code,
                "wall_seconds": wall,
                "samples": samples,
                "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "summary": summary.text,
            }
        )
    )
    return 0


class _Capture:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ---- the driver ----------------------------------------------------------------------------------------


def run(recipients: int, say: Any) -> dict[str, Any]:
    from bench.driver import advance_clocks, clocks
    from emulators.world import LocalWorld
    from shared.app import Context
    from shared.cli import run_sync
    from shared.provision import provision
    from shared.settings import load_settings

    rng = random.Random(7)
    mapped = recipients * 95 // 100
    result: dict[str, Any] = {
        "recipients": recipients,
        "mapped": mapped,
        "runs": [],
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    with LocalWorld() as world, tempfile.TemporaryDirectory(prefix="cbr-campaign-") as workdir:
        started = time.perf_counter()
        emails = [f"reader{n:07d}@example.org" for n in range(recipients)]
        for start in range(0, recipients, CHUNK):
            chunk = range(start, min(start + CHUNK, recipients))
            contacts = [
                {
                    "contactid": _guid(n),
                    "lastname": f"Reader {n}",
                    "emailaddress1": emails[n],
                    "modifiedon": "2024-01-08T09:00:00Z",
                }
                for n in chunk
                if n < mapped
            ]
            if contacts:
                world.dataverse_admin.seed({"contacts": contacts})
            audiences = [{"id": AUDIENCE, "name": "Readers"}] if start == 0 else []  # seeded once, then added to
            world.mailchimp_admin.seed(
                {
                    "audiences": audiences,
                    "members": [
                        {
                            "list_id": AUDIENCE,
                            "email_address": emails[n],
                            "status": "subscribed",
                            "last_changed": "2024-01-08T09:00:00+00:00",
                        }
                        for n in chunk
                    ],
                }
            )
        world.dataverse_admin.seed(
            {
                "lists": [
                    {
                        "listid": LIST_ID,
                        "listname": "Readers",
                        "type": False,
                        "createdfromcode": 2,
                        "members": [_guid(n) for n in range(mapped)],
                    }
                ]
            }
        )
        env = world.settings_env([LINK])
        settings = load_settings(env)
        ctx = Context.from_settings(settings)
        provision(settings, ctx.storage, ctx.dataverse)
        say(
            f"seeded {mapped:,} contacts and {recipients:,} members in {time.perf_counter() - started:.0f}s; "
            "first sync (builds the identity map) and the settling sync (reads the first one's writes back)"
        )
        for step in ("first", "settling"):
            started = time.perf_counter()
            summary = _Capture()
            if run_sync(ctx, summary, progress=lambda _: None) != 0:
                raise RuntimeError(f"the {step} sync did not complete cleanly:\n{summary.text}")
            advance_clocks(world, 15 * 60)
            say(f"{step} sync took {time.perf_counter() - started:.0f}s: {summary.text.strip()}")
        say("sending the campaign")
        world.mailchimp_admin.call(
            "POST",
            "campaigns",
            {"list_id": AUDIENCE, "id": CAMPAIGN, "send": True, "title": "Bench campaign", "subject_line": "Hello"},
        )
        advance_clocks(world, 60)
        first = _first_activity(rng, emails)
        _record(world, first)
        previous = clocks(world)
        advance_clocks(world, 15 * 60)
        result["runs"].append(_measure(world, env, ctx, "first read", Path(workdir), previous, say))
        later = [(e, "open", {}) for e in rng.sample(emails, recipients // 20)]
        later += [(e, "click", {"url": "https://example.org/later"}) for e in rng.sample(emails, recipients // 100)]
        _record(world, later)
        previous = clocks(world)
        advance_clocks(world, 15 * 60)
        result["runs"].append(_measure(world, env, ctx, "later read", Path(workdir), previous, say))
        previous = clocks(world)
        advance_clocks(world, 15 * 60)
        result["runs"].append(_measure(world, env, ctx, "nothing new", Path(workdir), previous, say))
    result["ratio_max"] = RATIO_MAX
    result["met"] = all(r["ratio"] <= RATIO_MAX for r in result["runs"])
    result["minimum_counted_as"] = HOW_THE_MINIMUM_IS_COUNTED
    return result


def _guid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-campaign/contact/{n}"))  # spread like real record ids


def _first_activity(rng: random.Random, emails: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    n = len(emails)
    shuffled = list(emails)
    rng.shuffle(shuffled)
    openers = shuffled[: n * 40 // 100]
    events: list[tuple[str, str, dict[str, Any]]] = [(e, "open", {}) for e in openers]
    events += [(e, "open", {}) for e in openers[: len(openers) // 10] for _ in range(2)]
    events += [
        (e, "click", {"url": f"https://example.org/story/{i % 7}"}) for i, e in enumerate(openers[: n * 8 // 100])
    ]
    rest = shuffled[n * 40 // 100 :]
    events += [(e, "bounce", {"type": "soft"}) for e in rest[: n // 100]]
    events += [(e, "bounce", {"type": "hard"}) for e in rest[n // 100 : n // 100 + n // 200]]
    events += [(e, "unsubscribe", {}) for e in openers[-(n * 3 // 1000) :]]
    return events


def _record(world: Any, events: list[tuple[str, str, dict[str, Any]]]) -> None:
    now = datetime.fromisoformat(world.mailchimp_admin.call("GET", "clock")["now"]).replace(microsecond=0)
    for start in range(0, len(events), CHUNK * 2):
        world.mailchimp_admin.call(
            "POST",
            f"campaigns/{CAMPAIGN}/activity",
            {
                "events": [
                    {
                        "email_address": email,
                        "action": action,
                        "at": (now + timedelta(seconds=i % 600)).isoformat(),
                        **extra,
                    }
                    for i, (email, action, extra) in enumerate(events[start : start + CHUNK * 2], start)
                ]
            },
        )


def _campaign_work(world: Any, ctx: Any) -> dict[str, int]:
    """What the next pass has to read, asked on the emulator before the run (these reads are not counted)."""
    import requests

    from emulators.world import API_KEY
    from shared.adapters.storage import SYNC_STATE
    from shared.features.campaigns import core as campaigns

    progress = campaigns.Progress.from_entity(
        CAMPAIGN, ctx.storage.get(SYNC_STATE, LINK["name"], f"campaign|{CAMPAIGN}")
    )
    base = f"{world.mailchimp.url}/3.0/reports/{CAMPAIGN}"

    def get(path: str, **params: str) -> dict[str, Any]:
        answer = requests.get(f"{base}{path}", params=params, auth=("bench", API_KEY), timeout=120)
        answer.raise_for_status()
        return answer.json()

    report = get("")
    signature_changed = campaigns.activity_signature(report) != progress.activity_signature
    activity = 0
    if progress.activity_since is None or signature_changed:
        params = {"count": "1", "fields": "total_items"}
        if progress.activity_since is not None:
            params["since"] = progress.activity_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        activity = int(get("/email-activity", **params)["total_items"])
    unsubscribes = int(report["unsubscribed"]) if int(report["unsubscribed"]) != progress.unsubscribes_seen else 0
    return {
        "recipients": int(report["emails_sent"]) if not progress.sent_to_read else 0,
        "activity_members": activity,
        "unsubscribes": unsubscribes,
        "first": int(not progress.sent_to_read),
    }


def _status_work(world: Any, ctx: Any, since: tuple[datetime, datetime]) -> tuple[int, int]:
    """(members, records) changed since the previous run started, each by its service's clock: what the
    status sync of the next run has to read (asked before the run; these reads are not counted)."""
    import requests

    from emulators.world import API_KEY

    params = {
        "count": "1",
        "fields": "total_items",  # Mailchimp's bound is exclusive and whole-second
        "since_last_changed": (since[0].replace(microsecond=0) - timedelta(seconds=1)).isoformat(),
    }
    answer = requests.get(
        f"{world.mailchimp.url}/3.0/lists/{AUDIENCE}/members", params=params, auth=("bench", API_KEY), timeout=120
    )
    answer.raise_for_status()
    list_filter = (
        f"listcontact_association/any(l:l/listid eq {LIST_ID}) and modifiedon ge {since[1]:%Y-%m-%dT%H:%M:%SZ}"
    )
    records = sum(len(page) for page in ctx.dataverse.iter_pages("contacts", select=["contactid"], filter=list_filter))
    return int(answer.json()["total_items"]), records


def _measure(
    world: Any, env: dict[str, str], ctx: Any, name: str, workdir: Path, previous: tuple[datetime, datetime], say: Any
) -> dict[str, Any]:
    needed = _campaign_work(world, ctx)
    members_changed, records_changed = _status_work(world, ctx, previous)
    rows_before = world.dataverse_admin.state()["tables"].get("cbr_emailengagements", 0)
    for admin in (world.mailchimp_admin, world.dataverse_admin):
        admin.reset_calls()
    parts_before = world.dataverse_admin.call("GET", "batch-parts")["parts"]
    out = workdir / f"{name.replace(' ', '-')}.json"
    say(f"{name}: running the sync")
    launched = datetime.now(UTC)
    process = subprocess.run(
        [sys.executable, "-m", "bench.campaign", "--child", str(out)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=3600,
        check=False,
    )
    if process.returncode != 0 or not out.exists():
        raise RuntimeError(f"the {name} sync failed (exit {process.returncode}):\n{process.stderr[-3000:]}")
    measured = json.loads(out.read_text())
    retries = [line for line in process.stderr.splitlines() if "retrying" in line]
    mailchimp, dataverse = world.mailchimp_admin.calls(), world.dataverse_admin.calls()
    parts = {
        route: n - parts_before.get(route, 0)
        for route, n in world.dataverse_admin.call("GET", "batch-parts")["parts"].items()
    }
    runs = ctx.ledger.latest_runs(LINK["name"], 1)
    if not runs or runs[0].started < launched.replace(microsecond=0) - timedelta(seconds=1):
        raise RuntimeError(f"the {name} sync recorded no run:\n{measured['summary']}")
    counts = Counter(runs[0].counts)
    rows_after = world.dataverse_admin.state()["tables"].get("cbr_emailengagements", 0)
    mapped_active = counts["campaign_activity_members_read"] - counts["campaign_activity_unmapped"]
    rows_to_write = counts["campaign_rows_written"] + (
        rows_after - rows_before if needed["first"] else counts["campaign_engagements_written"]
    )
    campaign_minimum = {
        "campaigns_list": 1,
        "report": counts["campaign_passes"],  # a quiet run reads no report of a campaign with nothing new
        "sent_to": ceil(needed["recipients"] / MAILCHIMP_PAGE),
        "email_activity": ceil(needed["activity_members"] / MAILCHIMP_PAGE),
        "unsubscribed": ceil(needed["unsubscribes"] / MAILCHIMP_PAGE),
        "rows_read_back": 0 if needed["first"] else ceil(mapped_active / READ_BY_ID),
        "rows_written": ceil(rows_to_write / DATAVERSE_WRITE),
    }
    status = {  # design.md's efficiency model for the status sync of the same run
        "members_read": max(1, ceil(members_changed / MAILCHIMP_PAGE)),
        "members_written": ceil(counts["mailchimp_writes"] / 500),
        "list_definition": 1,
        "records_read": max(1, ceil(records_changed / DATAVERSE_READ)),
        "new_memberships": 1,
        "records_written": ceil(counts["dynamics_writes"] / DATAVERSE_WRITE),
    }
    total_minimum = sum(campaign_minimum.values()) + sum(status.values())
    total = sum(mailchimp.values()) + sum(dataverse.values())
    samples = measured["samples"]
    result = {
        "run": name,
        "exit_code": measured["exit_code"],
        "status": runs[0].status,
        "wall_seconds": round(measured["wall_seconds"], 1),
        "peak_rss_mb": round(measured["peak_rss_kb"] / 1024, 1),
        "rss_mb_while_streaming": _rss_profile(samples),
        "api_calls": {
            "mailchimp": dict(sorted((k, v) for k, v in mailchimp.items() if v)),
            "dataverse": dict(sorted((k, v) for k, v in dataverse.items() if v)),
            "total": total,
            "inside_dataverse_batches": dict(sorted((k, v) for k, v in parts.items() if v)),
        },
        "work": {
            **needed,
            "members_changed": members_changed,
            "records_changed": records_changed,
            "engagement_rows_written": counts["campaign_engagements_written"],
            "engagement_rows_read_back": counts["campaign_rows_read"],
            "activity_members_read": counts["campaign_activity_members_read"],
            "activity_members_not_in_dynamics": counts["campaign_activity_unmapped"],
            "status_writes_to_dynamics": counts["dynamics_writes"],
        },
        "minimum": {"campaign": campaign_minimum, "status": status, "total": total_minimum},
        "ratio": round(total / total_minimum, 3),
        "retries_logged": len(retries),
        **({"retry_examples": retries[:3]} if retries else {}),
    }
    say(
        f"{name}: {result['wall_seconds']}s, {total} API calls (minimum {total_minimum}, ratio {result['ratio']}), "
        f"peak RSS {result['peak_rss_mb']} MB"
    )
    return result


def _rss_profile(samples: list[list[float]]) -> dict[str, float]:
    """RSS at a tenth, half and nine tenths of the run, and its largest rise between the first and last tenth."""
    if not samples:
        return {}
    values = [rss for _, rss in samples]

    def at(share: float) -> float:
        return round(values[min(len(values) - 1, int(len(values) * share))], 1)

    return {
        "at_10_percent": at(0.1),
        "at_50_percent": at(0.5),
        "at_90_percent": at(0.9),
        "rise_after_first_tenth": round(max(values[len(values) // 10 :]) - at(0.1), 1),
    }


def describe(result: dict[str, Any]) -> str:
    lines = [
        f"Campaign activity: {result['recipients']:,} recipients, {result['mapped']:,} of them in Dynamics "
        f"(Python {result['python']}, {result['cpus']} CPUs)"
    ]
    for run in result["runs"]:
        lines.append(
            f"\n{run['run']}: {run['wall_seconds']} s, peak RSS {run['peak_rss_mb']} MB "
            f"(while streaming: {run['rss_mb_while_streaming']}), status {run['status']}"
        )
        for side in ("mailchimp", "dataverse"):
            for endpoint, n in run["api_calls"][side].items():
                lines.append(f"  {side:9} {n:6,}  {endpoint}")
        for endpoint, n in run["api_calls"]["inside_dataverse_batches"].items():
            lines.append(f"  {'in $batch':9} {n:6,}  {endpoint}")
        low = run["minimum"]
        parts = ", ".join(f"{k} {v}" for k, v in low["campaign"].items() if v)
        lines.append(
            f"  calls {run['api_calls']['total']:,}; minimum {low['total']:,} (campaign: {parts}; status "
            f"sync: {sum(low['status'].values())}); ratio {run['ratio']} (target <= {RATIO_MAX})"
        )
        lines.append(f"  work: {json.dumps(run['work'])}")
    lines.append(f"\nall runs within {RATIO_MAX} x the minimum: {result['met']}")
    lines.append(f"\nHow the minimum is counted: {result['minimum_counted_as']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.campaign", description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000, help="campaign recipients (default 100,000)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--child", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        logging.basicConfig(level=logging.WARNING)
        return child(args.child)
    if args.recipients < 1000:
        parser.error("--recipients must be at least 1,000")
    result = run(args.recipients, say=lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2) if args.json else describe(result))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
