"""python -m shared.cli check | provision | sync [--link NAME] [--full] [--dry-run] [--workers N] | status
| forget EMAIL [--dry-run] | explain EMAIL [--json]
| webhooks register|status|remove | serve [--port 7071]

Settings come from the environment, or from a local.settings.json given with --settings.
Exit codes: 0 fine; 1 a batch was dead-lettered (sync) or a run failed; 2 configuration problems.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from shared import app as engine
from shared.adapters.dataverse import Dataverse, DataverseError
from shared.adapters.mailchimp import Mailchimp, MailchimpError
from shared.adapters.storage import BATCHES_QUEUE, LINKS_QUEUE, Storage, poison
from shared.errors import ConfigurationError, ConsentBridgeError
from shared.features.erasure.explain import explain
from shared.features.erasure.explain import render as render_explanation
from shared.features.erasure.forget import AddressError, describe_forgetting, forget
from shared.features.fields import schema as field_schema
from shared.features.realtime.registration import Registration
from shared.provision import provision
from shared.serve import Server
from shared.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class QueueRules:
    """host.json's queue settings, honoured by `sync` as the Functions host would."""

    max_dequeue_count: int = 5
    visibility_timeout: float = 30.0

    @classmethod
    def from_host_json(cls, path: Path = ROOT / "host.json") -> QueueRules:
        queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
        hours, minutes, seconds = (float(part) for part in queues.get("visibilityTimeout", "00:00:30").split(":"))
        return cls(int(queues.get("maxDequeueCount", 5)), hours * 3600 + minutes * 60 + seconds)


def read_environment(settings_file: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if settings_file:
        values = json.loads(Path(settings_file).read_text()).get("Values", {})
        env.update({k: str(v) for k, v in values.items() if str(v) != ""})
    return env


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description="Consent Bridge operations")
    parser.add_argument("--settings", help="a local.settings.json whose Values override the environment")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate the settings and reach both APIs and storage")
    commands.add_parser("provision", help="create storage tables and queues and the Dataverse columns")
    sync = commands.add_parser("sync", help="one complete run through the same handlers the Functions host calls")
    sync.add_argument("--link", help="only this link (a name from SYNC_LINKS)")
    sync.add_argument("--full", action="store_true", help="a full pass instead of deltas")
    sync.add_argument("--dry-run", action="store_true", help="print the planned changes; write nothing")
    sync.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="queue handlers running at once, as on a Functions host scaled out (default 1)",
    )
    sync.add_argument(
        "--retry-delay",
        type=float,
        default=None,
        help="seconds before a failed message is retried (default: host.json visibilityTimeout)",
    )
    commands.add_parser("status", help="the latest runs per link with their counts")
    forget_ = commands.add_parser("forget", help="erase an address: Mailchimp, the product's state, a tombstone")
    forget_.add_argument("email")
    forget_.add_argument("--dry-run", action="store_true", help="print what would be erased; change nothing")
    explain_ = commands.add_parser("explain", help="everything the product holds about one person")
    explain_.add_argument("email")
    explain_.add_argument("--json", action="store_true", help="JSON for tooling instead of text")
    webhooks = commands.add_parser("webhooks", help="the real-time path's webhooks in Mailchimp and Dataverse")
    webhooks.add_argument("action", choices=("register", "status", "remove"))
    serve = commands.add_parser("serve", help="the app on loopback as the Functions host runs it; Ctrl-C stops it")
    serve.add_argument("--port", type=int, default=7071, help="the loopback port (default 7071; 0 picks one)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(read_environment(args.settings))
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"configuration: {problem}", file=out)
        return 2
    if args.command == "check":
        return check(settings, out)
    ctx = engine.Context.from_settings(settings)
    if args.command == "provision":
        try:
            lines = provision(settings, ctx.storage, ctx.dataverse, ctx.mailchimp)
        except ConfigurationError as exc:
            print(f"configuration: {exc}", file=out)
            return 2
        except ConsentBridgeError as exc:  # Dataverse refused: the table, column or view, the call, what to do
            print(f"provision stopped at {exc}", file=out)
            return 2
        for line in lines or ["everything was already in place"]:
            print(line, file=out)
        return 0
    if args.command == "status":
        return status(ctx, out)
    if args.command in ("forget", "explain"):
        return privacy_request(ctx, args, out)
    if args.command == "webhooks":
        return manage_webhooks(ctx, args.action, out)
    if args.command == "serve":
        return serve_until_interrupted(ctx, args.port, out)
    rules = QueueRules.from_host_json()
    if args.retry_delay is not None:
        rules = QueueRules(rules.max_dequeue_count, args.retry_delay)
    try:
        return run_sync(
            ctx, out, link=args.link, full=args.full, dry_run=args.dry_run, rules=rules, workers=args.workers
        )
    except SettingsError as exc:
        print(f"configuration: {exc}", file=out)
        return 2


def check(settings: Settings, out: TextIO) -> int:
    problems: list[str] = []
    try:
        mailchimp = Mailchimp.from_settings(settings)
        mailchimp.ping()
        for link in settings.links:
            try:
                mailchimp.audience(link.audience_id)
            except MailchimpError as exc:
                problems.append(f"link {link.name}: Mailchimp audience {link.audience_id}: {exc}")
    except (MailchimpError, ConsentBridgeError) as exc:
        problems.append(f"Mailchimp: {exc}")
    try:
        dataverse = Dataverse.from_settings(settings)
        dataverse.whoami()
        for link in settings.links:
            try:
                dataverse.get(f"lists({link.marketing_list_id})", params={"$select": "listname"})
            except DataverseError as exc:
                problems.append(f"link {link.name}: marketing list {link.marketing_list_id}: {exc}")
    except (DataverseError, ConsentBridgeError) as exc:
        problems.append(f"Dataverse: {exc}")
    try:
        storage = Storage(settings.storage)
        list(storage.tables.list_tables(results_per_page=1))
        storage.queues.get_service_properties()
    except Exception as exc:
        problems.append(f"storage (AzureWebJobsStorage): {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    if not problems:  # both services reached: the mapped columns and merge fields
        try:
            problems += field_schema.check_fields(settings, mailchimp, dataverse)
        except (MailchimpError, DataverseError, ConsentBridgeError) as exc:
            problems.append(f"FIELD_MAP: {exc}")
    for problem in problems:
        print(problem, file=out)
    if not problems:
        print(f"ok: Mailchimp, Dataverse and storage reached; {len(settings.links)} link(s) checked", file=out)
    return 2 if problems else 0


def privacy_request(ctx: engine.Context, args: argparse.Namespace, out: TextIO) -> int:
    """forget: 0 done, 1 a service refused (what remains is printed; run it again), 2 not an address.
    explain: 0, or 2 when the text is not an address."""
    try:
        if args.command == "explain":
            found = explain(ctx, args.email)
            print(json.dumps(found, indent=2) if args.json else render_explanation(found), file=out)
            return 0
        done = forget(ctx, args.email, dry_run=args.dry_run)
    except AddressError as exc:
        print(f"{args.command}: {exc}", file=out)
        return 2
    for line in describe_forgetting(done):
        print(line, file=out)
    return 0 if done.done else 1


def manage_webhooks(ctx: engine.Context, action: str, out: TextIO) -> int:
    """register / status / remove: 0 done, 1 a service refused (run it again), 2 configuration."""
    registration = Registration(ctx, watched=ctx.watched)
    try:
        ctx.storage.ensure()
        if action == "status":
            lines = [found.line() for found in registration.status()]
        else:
            lines = registration.register() if action == "register" else registration.remove()
    except ConfigurationError as exc:
        print(f"configuration: {exc}", file=out)
        return 2
    except (MailchimpError, DataverseError) as exc:
        print(f"webhooks {action} stopped: {exc}", file=out)
        return 1
    for line in lines:
        print(line, file=out)
    return 0


def serve_until_interrupted(ctx: engine.Context, port: int, out: TextIO) -> int:
    rules = QueueRules.from_host_json()
    server = Server(
        ctx,
        port=port,
        max_dequeue_count=rules.max_dequeue_count,
        retry_seconds=rules.visibility_timeout,
        say=lambda text: print(text, file=out, flush=True),
    )
    with server:
        print(f"serving on {server.url} (POST /api/sync, GET /api/status, /api/webhooks/...); Ctrl-C stops", file=out)
        try:
            while not server.stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            print("stopping: finishing the messages in hand", file=out, flush=True)
    return 0


def status(ctx: engine.Context, out: TextIO) -> int:
    rows = {row["link"]: row for row in engine.link_statuses(ctx)}  # what the link's row in Dynamics says
    for link in ctx.settings.links:
        runs = ctx.ledger.latest_runs(link.name)
        print(f"{link.name}:", file=out)
        row = rows[link.name]
        print(
            f"  row in Dynamics: {row['state']}; started {row['started'] or '-'}; finished {row['finished'] or '-'}; "
            f"next run {row['nextRun'] or '-'}; {row['summary'] or 'no summary yet'}"
            + (f"; error: {row['error']}" if row["error"] else "")
            + (f"; last real-time event: {row['lastEvent']}" if row.get("lastEvent") else ""),
            file=out,
        )
        if not runs:
            print("  no runs yet", file=out)
        for run in runs:
            print("  " + describe_run(run), file=out)
    return 0


def describe_run(run: Any) -> str:
    took = f" in {(run.finished - run.started).total_seconds():.1f}s" if run.finished else ""
    counts = run.counts
    rules = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(counts.items()) if k.startswith("rule:"))
    skips = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(counts.items()) if k.startswith("skip:"))
    text = (
        f"{run.started:%Y-%m-%d %H:%M:%S} {run.run_id} {run.status}{took}"
        f"{' (full pass)' if run.full else ''}{' (dry run)' if run.dry_run else ''}: "
        f"read {counts.get('mailchimp_read', 0)} members and {counts.get('dataverse_read', 0)} records; "
        f"wrote {counts.get('mailchimp_writes', 0)} to Mailchimp and {counts.get('dynamics_writes', 0)} "
        f"to Dynamics; {run.batches} batches"
    )
    if run.dead_batches:
        text += f", {run.dead_batches} dead-lettered"
    if counts.get("preference_mailchimp_writes") or counts.get("preference_dynamics_writes"):
        text += (
            f"; preferences: {counts.get('preference_mailchimp_writes', 0)} members written in Mailchimp, "
            f"{counts.get('preference_dynamics_writes', 0)} changes in Dynamics"
        )
    if counts.get("campaign_passes"):
        text += (
            f"; campaigns: {counts['campaign_passes']} read, "
            f"{counts.get('campaign_engagements_written', 0)} engagement rows written"
        )
    if rules:
        text += f"; rules: {rules}"
    if skips:
        text += f"; skipped: {skips}"
    if run.error:
        text += f"; error: {run.error}"
    return text


def run_sync(
    ctx: engine.Context,
    out: TextIO,
    *,
    link: str | None = None,
    full: bool = False,
    dry_run: bool = False,
    rules: QueueRules | None = None,
    progress: Callable[[str], None] | None = None,
    workers: int = 1,
) -> int:
    rules = rules or QueueRules.from_host_json()
    ctx.storage.ensure()
    say = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    planned = engine.plan_sync(ctx, link_name=link, full=full, dry_run=dry_run, trigger="cli")
    for item in planned:
        if item.skipped:
            print(f"{item.link}: skipped, {item.skipped}", file=out)
    refused: set[str] = set()  # runs whose scan Dataverse refused (a privilege, a table): exit 2

    def scan(message: dict[str, Any], _: int) -> Any:
        counts = engine.scan_link(ctx, message)
        if counts.get("refused"):
            refused.add(message["run"])
        return counts

    handlers: dict[str, Callable[[dict[str, Any], int], Any]] = {
        LINKS_QUEUE: scan,
        BATCHES_QUEUE: lambda m, attempt: engine.reconcile_batch(ctx, m, attempt),
        poison(LINKS_QUEUE): lambda m, _: engine.dead_letter_link(ctx, m),
        poison(BATCHES_QUEUE): lambda m, _: engine.dead_letter_batch(ctx, m),
    }
    drain(ctx, handlers, rules, say, workers)
    exit_code = 0
    for item in planned:
        if not item.run_id:
            continue
        summary = ctx.ledger.run(item.link, item.run_id)
        run = ctx.ledger.summary(summary) if summary else None
        if run is None:
            continue
        print(f"{item.link}: {describe_run(run)}", file=out)
        if dry_run:
            for change in ctx.ledger.planned(item.link, item.run_id):
                print(f"  would {describe_change(change)}", file=out)
        if run.status == "failed":
            exit_code = max(exit_code, 2 if item.run_id in refused else 1)
        if run.dead_batches:
            print(
                f"{item.link}: {run.dead_batches} batch(es) were dead-lettered; their members are retried by the "
                f"next run (see the sync-batches-poison queue)",
                file=out,
            )
            exit_code = max(exit_code, 1)
    return exit_code


def describe_change(change: dict[str, Any]) -> str:
    parts = []
    if change.get("mailchimp_new"):
        parts.append(
            f"set member {change['member_hash']} from {change['mailchimp_old']} to {change['mailchimp_new']} "
            f"in Mailchimp"
        )
    if change.get("dynamics_new"):
        parts.append(f"write {change['dynamics_new']} on {len(change['record_ids'])} record(s) in Dynamics")
    return f"{' and '.join(parts) or 'change nothing'} ({change['rule']})"


def _workers(text: str) -> int:
    """``--workers``: a whole number from 1 to 64."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"expected a whole number of queue handlers from 1 to 64; got {text!r}")
    return value


def drain(
    ctx: engine.Context,
    handlers: dict[str, Callable[[dict[str, Any], int], Any]],
    rules: QueueRules,
    say: Callable[[str], None],
    workers: int = 1,
) -> None:
    """Handles messages as the Functions host does until every queue is empty: failures become visible again
    after the visibility timeout, and a message failing maxDequeueCount times moves to its poison queue.
    ``workers`` handlers run at once, as on a host scaled out (each takes one message at a time then)."""
    handled: Counter[str] = Counter()
    started = time.monotonic()
    crew = _Crew()
    take = 16 if workers <= 1 else 1

    def work() -> None:
        while not crew.done:
            busy = False
            for queue, handler in handlers.items():
                for message in ctx.storage.receive(queue, visibility_timeout=600, max_messages=take):
                    busy = True
                    with crew.working():
                        if _handle(ctx, queue, handler, message, rules, say):
                            with crew.lock:
                                handled[queue] += 1
                                done = handled[queue]
                            if queue == BATCHES_QUEUE:
                                say(f"batches reconciled: {done} ({time.monotonic() - started:.1f}s)")
            if busy:
                continue
            if crew.finished(lambda: not any(ctx.storage.queue_length(q) for q in handlers)):
                return
            if workers <= 1:
                time.sleep(0.2)  # messages are waiting out their visibility timeout
            else:
                crew.rest(2.0)  # until another handler finishes a message (it may have queued more)

    if workers <= 1:
        work()
        return
    failures: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as exc:  # raised again on the caller's thread below
            failures.append(exc)
            crew.stop()

    threads = [threading.Thread(target=guarded, name=f"sync-worker-{n + 1}") for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


class _Crew:
    """The drain's handlers: how many are handling a message now, and whether the queues are done."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.active = 0
        self.done = False

    @contextmanager
    def working(self) -> Iterator[None]:
        with self.lock:
            self.active += 1
        try:
            yield
        finally:
            with self.lock:
                self.active -= 1
                self.changed.notify_all()

    def rest(self, longest: float) -> None:
        """An idle handler waits for another to finish a message, at most ``longest`` seconds."""
        with self.lock:
            if not self.done:
                self.changed.wait(longest)

    def finished(self, queues_empty: Callable[[], bool]) -> bool:
        """True once no handler is busy and every queue is empty (a busy handler may still enqueue more)."""
        with self.lock:
            if not self.done and self.active == 0 and queues_empty():
                self.done = True
                self.changed.notify_all()
            return self.done

    def stop(self) -> None:
        with self.lock:
            self.done = True
            self.changed.notify_all()


def _handle(
    ctx: engine.Context,
    queue: str,
    handler: Callable[[dict[str, Any], int], Any],
    message: Any,
    rules: QueueRules,
    say: Callable[[str], None],
) -> bool:
    """One message through its handler; False when it failed (retried later, or moved to the poison queue)."""
    body = json.loads(message.content)
    try:
        handler(body, message.dequeue_count or 1)
    except Exception as exc:
        if (message.dequeue_count or 1) >= rules.max_dequeue_count and not queue.endswith("-poison"):
            ctx.storage.send(poison(queue), body)
            ctx.storage.delete(queue, message)
            say(
                f"{queue}: message moved to {poison(queue)} after {message.dequeue_count} attempts "
                f"({type(exc).__name__}: {str(exc)[:200]})"
            )
        else:
            ctx.storage.queue(queue).update_message(message, visibility_timeout=int(rules.visibility_timeout))
            say(f"{queue}: attempt {message.dequeue_count} failed ({type(exc).__name__}: {str(exc)[:200]}); retrying")
        return False
    ctx.storage.delete(queue, message)
    return True


if __name__ == "__main__":
    sys.exit(main())
