"""python -m bench [--records N] [--scale 4] [--json] [--save PATH] [--interval-minutes 15] [--tag T] [--profile DIR]
[--latency model [--time-scale 0.05] [--workers N]]"""

from __future__ import annotations

import argparse
import json
import pstats
import signal
import sys
from pathlib import Path

from bench.driver import run_benchmark
from bench.latency import parse_scales
from bench.report import format_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measures the sync at N and at scale x N "
        "records: API calls against the efficiency model, time and peak memory.",
    )
    parser.add_argument("--records", type=int, default=50_000, help="records in the marketing list (default 50,000)")
    parser.add_argument("--scale", type=int, default=4, help="then measure scale x records too; 1 measures N only")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    parser.add_argument("--save", metavar="PATH", help="also write the JSON document to this file")
    parser.add_argument(
        "--interval-minutes",
        type=float,
        default=15.0,
        help="time that passes on both services between runs (the timer's schedule; default 15)",
    )
    parser.add_argument(
        "--tag",
        help="link the list with this Mailchimp tag (default: no tag; the efficiency model "
        "has no row for tag writes, so their calls count against the ratio)",
    )
    parser.add_argument("--batch-size", type=int, help="BATCH_SIZE for the runs (default: the setting's default, 500)")
    parser.add_argument(
        "--interests",
        type=int,
        default=5,
        help="Mailchimp interests in the audience, synced as preferences (default 5; 0: none)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="profile each sync with cProfile into DIR and print its top costs (slows the runs)",
    )
    parser.add_argument(
        "--latency",
        choices=["off", "model"],
        default="off",
        help="model: both emulators answer after the real services' server time (their latency models), and each "
        "run is measured against the bound the services' limits allow",
    )
    parser.add_argument(
        "--time-scale",
        default="0.05",
        help="with --latency model: every modelled second takes this many seconds; one number, or per run as in "
        "'0.05,incremental=1' (default 0.05)",
    )
    parser.add_argument("--workers", type=int, default=1, help="queue handlers at once in each sync (sync --workers)")
    args = parser.parse_args(argv)
    if args.records < 10 or args.scale < 1:
        parser.error("--records must be at least 10 and --scale at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        scales = parse_scales(args.time_scale)
    except ValueError as exc:
        parser.error(f"--time-scale: {exc}")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    # stopped from outside: unwind, so the local world's processes stop with the benchmark
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run_benchmark(
        args.records,
        args.scale,
        interval_minutes=args.interval_minutes,
        tag=args.tag,
        profile_dir=args.profile,
        batch_size=args.batch_size,
        interests=args.interests,
        say=lambda text: print(text, file=sys.stderr, flush=True),
        time_scales=scales if args.latency == "model" else None,
        workers=args.workers,
    )
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_report(result))
    if args.profile:
        stream = sys.stderr if args.json else sys.stdout  # the JSON document stays alone on stdout
        for path in sorted(Path(args.profile).glob("*.prof")):
            print(f"\n== profile {path.name}: top 25 by cumulative time ==", file=stream)
            pstats.Stats(str(path), stream=stream).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
