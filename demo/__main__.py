"""The main job: a real sync.

With credentials in the environment (or a local.settings.json), it runs `python -m shared.cli sync`
against the real services. Without them it builds the local world (Azurite and both emulators),
seeds a realistic scenario, syncs, changes things on both sides as people would, syncs again and
prints what changed and why, as the ConsentAudit table records it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

WHY = {
    "new-member": "is new in the marketing list and not in the audience: added to Mailchimp",
    "not-added-opted-out": "is new in the marketing list but opted out in Dynamics: not added to Mailchimp",
    "mailchimp-changed": "changed status in Mailchimp: Dynamics now says the same",
    "dynamics-opt-out": "opted out in Dynamics: unsubscribed in Mailchimp",
    "dynamics-opt-in": "opted in again in Dynamics while still subscribed in Mailchimp: nothing to send",
    "resubscribe-blocked": "was opted in again in Dynamics, but unsubscribed in Mailchimp: never re-subscribed "
    "automatically, so the opt-out is restored in Dynamics",
    "resubscribe-confirm": "was opted in again in Dynamics after unsubscribing: set to pending, Mailchimp emails "
    "a confirmation and only the person's click subscribes them",
    "first-meeting-agree": "met for the first time and both sides agree: the status column is filled in",
    "first-meeting-opt-out-wins": "met for the first time and the sides disagree: the opt-out wins on both sides",
    "both-changed-agree": "changed on both sides to the same meaning",
    "both-changed-opt-out-wins": "changed on both sides differently: the opt-out wins",
    "both-changed-mailchimp-newer": "re-subscribed through Mailchimp after the Dynamics change: Mailchimp wins",
    "stale-base-opt-out-wins": "disagreed with the last agreed state on both sides: the opt-out wins",
    "member-archived-not-revived": "is archived in Mailchimp: not brought back",
    "no-syncable-record": "has no record that can be written (inactive, read-only or no valid address)",
    "skipped": "was skipped",
    "email-changed-in-dynamics": "changed address in Dynamics: the Mailchimp member's address follows",
    "email-changed-in-mailchimp": "changed address in Mailchimp: the records' address follows",
    "email-conflict": "changed address in Dynamics to one that is already a member: nothing was merged",
    **{
        "field-first-meeting": "met for the first time: the Dynamics names were written to Mailchimp",
        "field-first-meeting-kept": "met with an empty name on one side: the other side's name was kept",
        "field-dynamics-changed": "had a name changed in Dynamics: Mailchimp follows",
        "field-mailchimp-changed": "had a name changed in Mailchimp: Dynamics follows",
        "field-both-changed-mailchimp-later": "had a name changed on both sides: Mailchimp's later change wins",
        "field-both-changed-dynamics-later": "had a name changed on both sides: Dynamics' later change wins",
    },
}
COLUMN_NAMES = {
    "donotbulkemail": "Do not allow Bulk Emails",
    "donotsendmm": "Send Marketing Materials",
    "cbr_subscriberstatus": "Subscriber Status",
}
STATUS_NAMES = {
    100000000: "Subscribed",
    100000001: "Unsubscribed",
    100000002: "Cleaned",
    100000003: "Pending",
    100000004: "Transactional",
    100000005: "Archived",
}


def has_credentials() -> bool:
    if os.environ.get("MAILCHIMP_API_KEY") and os.environ.get("DATAVERSE_URL"):
        return True
    return (ROOT / "local.settings.json").exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a sync: for real with credentials, else on the local world")
    parser.add_argument("--local", action="store_true", help="use the local world even if credentials are set")
    args = parser.parse_args(argv)
    if has_credentials() and not args.local:
        from shared.cli import main as cli

        settings = ["--settings", str(ROOT / "local.settings.json")] if (ROOT / "local.settings.json").exists() else []
        return cli([*settings, "sync"])
    return local_demo()


def local_demo() -> int:
    from demo import campaigns, changes, memberships, preferences, realtime, scenario, status
    from demo import fields as mapped
    from emulators.world import LocalWorld
    from shared.app import Context
    from shared.cli import run_sync
    from shared.provision import provision
    from shared.settings import load_settings

    print(
        "Consent Bridge, on the local world (no credentials set): Azurite and the Mailchimp and Dataverse "
        "emulators on loopback.\n"
    )
    with LocalWorld() as world:
        story = scenario.build()
        world.dataverse_admin.seed(story.dataverse_seed())
        world.mailchimp_admin.seed(story.mailchimp_seed())
        print(
            f"Seeded {len(story.contacts)} contacts and {len(story.leads)} leads in two marketing lists, and "
            f"{len(story.mailchimp_members)} members in two Mailchimp audiences."
        )
        for line in preferences.seed(world, story):
            print(line)
        print()
        settings = load_settings(world.settings_env(scenario.LINKS, FIELD_MAP=mapped.FIELD_MAP))
        ctx = Context.from_settings(settings)
        for line in provision(settings, ctx.storage, ctx.dataverse, ctx.mailchimp):
            print(f"provision: {line}")
        print("\n== First sync: both sides meet ==")
        started = time.monotonic()
        code = run_sync(ctx, sys.stdout, progress=lambda _: None)
        print(f"(took {time.monotonic() - started:.1f}s)")
        print_rules(ctx, scenario.LINKS)
        for line in mapped.arrived(world, story):
            print(f"  {line}")
        print("\n== Meanwhile, people and users change things ==")
        for line in changes.apply(world, story):
            print(f"- {line}")
        for line in preferences.change(world, story):
            print(f"- {line}")
        for line in mapped.change(world, story):
            print(f"- {line}")
        in_dynamics = {c["emailaddress1"] for c in story.contacts if c.get("emailaddress1")}
        for line in campaigns.send_campaign(world.mailchimp_admin, in_dynamics=in_dynamics):
            print(f"- {line}")
        print("\n== Second sync: the changes flow ==")
        code = max(code, run_sync(ctx, sys.stdout, progress=lambda _: None))
        print("\nWhat changed and why (from the ConsentAudit table):")
        for link in scenario.LINKS:
            for line in audit_lines(ctx, link["name"]):
                print(f"  {line}")
        print("\nMapped fields (FIELD_MAP: firstname both ways, lastname to Mailchimp):")
        for line in mapped.report(world, story):
            print(f"  {line}")
        print("\nMarketing preferences:")
        for line in preferences.report(ctx):
            print(f"  {line}")
        print("\nCampaigns in Dynamics:")
        for line in campaigns.campaign_lines(ctx):
            print(f"  {line}")
        print("\nAudience memberships and consent history in Dynamics:")
        for line in memberships.report(world.dataverse_admin):
            print(f"  {line}")
        print("\n== Real time: serve, the webhooks, one change each way and an audience-scoped opt-out ==")
        for line in realtime.run(world, scenario.LINKS, FIELD_MAP=mapped.FIELD_MAP):
            print(f"  {line}")
        print("\nSync links in Dynamics (the 'Sync links' view):")
        for line in status.link_rows(world.dataverse_admin):
            print(f"  {line}")
        print(
            f"\nMailchimp calls: {sum(world.mailchimp_admin.calls().values())}, "
            f"Dataverse calls: {sum(world.dataverse_admin.calls().values())} (both runs, including provisioning)"
        )
    return code


def print_rules(ctx: Any, links: list[dict[str, Any]]) -> None:
    for link in links:
        run = ctx.ledger.latest_runs(link["name"], 1)[0]
        rules = sorted(
            ((k.split(":", 1)[1], v) for k, v in run.counts.items() if k.startswith("rule:")), key=lambda kv: -kv[1]
        )
        print(
            f"  {link['name']}: "
            + "; ".join(f"{n} {WHY.get(rule, rule).split(':')[0]} ({rule})" for rule, n in rules if rule != "no-change")
        )


def audit_lines(ctx: Any, link: str, examples: int = 3) -> list[str]:
    """The latest run's audit rows, grouped by the rule that decided, with a few examples each."""
    from shared.adapters.storage import CONSENT_AUDIT

    run = ctx.ledger.latest_runs(link, 1)[0]
    rows = ctx.storage.query(
        CONSENT_AUDIT,
        "RowKey ge @a and RowKey lt @b and link eq @l",
        {"a": f"{run.run_id}|", "b": f"{run.run_id}}}", "l": link},
    )
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_rule.setdefault(row["rule"], []).append(row)
    lines = []
    for rule, found in sorted(by_rule.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"{link}: {len(found)} x {rule}")
        lines += [f"    {line}" for line in describe_rows(link, found[:examples])]
        if len(found) > examples:
            lines.append(f"    … and {len(found) - examples} more")
    return lines or [f"{link}: nothing changed"]


def describe_rows(link: str, rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        who = f"member {row['member_hash'][:8]}" if row["member_hash"] else "a record"
        records = json.loads(row["record_ids"] or "[]")
        text = f"{who} {WHY.get(row['rule'], row['rule'])}"
        if row["rule"].startswith("field-"):  # field audits keep digests of the values, not the values
            lines.append(f"{text}; {row.get('detail') or ''} [records {', '.join(r[:8] for r in records)}]")
            continue
        if row.get("mailchimp_new"):
            text += f"; Mailchimp {row['mailchimp_old']} → {row['mailchimp_new']}"
        if row.get("dynamics_new"):
            text += "; Dynamics " + describe_dynamics(json.loads(row["dynamics_new"]))
        if row.get("skipped"):
            reasons = sorted({reason for _, reason in json.loads(row["skipped"])})
            text += f"; skipped ({', '.join(reasons)})"
        if row.get("detail"):
            text += f"; {row['detail']}"
        lines.append(f"{text} [records {', '.join(r[:8] for r in records)}]")
    return lines


def describe_dynamics(writes: dict[str, dict[str, Any]]) -> str:
    parts = []
    for body in list(writes.values())[:1]:
        for column, value in body.items():
            name = COLUMN_NAMES.get(column, column)
            if column == "donotbulkemail":
                value = "Do Not Allow" if value else "Allow"
            elif column == "donotsendmm":
                value = "Do Not Send" if value else "Send"
            else:
                value = STATUS_NAMES.get(value, value)
            parts.append(f"{name} = {value}")
    suffix = f" on {len(writes)} records" if len(writes) > 1 else ""
    return ", ".join(parts) + suffix


if __name__ == "__main__":
    sys.exit(main())
