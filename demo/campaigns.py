"""The main job's campaign: one newsletter sent on the Mailchimp emulator, people opening, clicking, bouncing and
unsubscribing, and afterwards what landed in Dynamics.

    said = send_campaign(world.mailchimp_admin, in_dynamics={c["emailaddress1"] for c in story.contacts
                                                             if c.get("emailaddress1")})  # between two syncs
    ... the next sync ...
    for line in campaign_lines(ctx): print(line)       # campaigns, engagement and audited causes
"""

from __future__ import annotations

from typing import Any

from demo import scenario as sc

CAMPAIGN_ID = "spring-newsletter"
TITLE = "Spring newsletter"


def send_campaign(
    mailchimp_admin: Any,
    audience: str = sc.NEWSLETTER_AUDIENCE,
    campaign_id: str = CAMPAIGN_ID,
    title: str = TITLE,
    in_dynamics: set[str] | None = None,
) -> list[str]:
    """Sends a campaign to the audience's subscribed members and records what they do with it; the bounces and
    the unsubscribe happen to people ``in_dynamics`` (addresses of records) when given, so they reach the audit."""
    sent = mailchimp_admin.call(
        "POST",
        "campaigns",
        {
            "list_id": audience,
            "id": campaign_id,
            "title": title,
            "subject_line": "What is new this spring",
            "send": True,
        },
    )
    members = mailchimp_admin.state(list_id=audience)["audiences"][audience]["members"]
    recipients = sorted(m["email_address"] for m in members.values() if m["status"] == "subscribed")
    if len(recipients) < 6:
        return [f"campaign '{title}' sent to {sent['recipients']} members (too few for activity)"]
    openers = recipients[: max(2, len(recipients) * 2 // 5)]
    clickers = openers[: max(1, len(openers) // 3)]
    known = [e for e in recipients if e.lower() in {a.lower() for a in in_dynamics or ()}] or recipients
    soft, hard, leaving = known[-1], known[-2], known[-3]
    # everything happens now, by the emulator's clock: the next sync reads it
    events = [{"email_address": e, "action": "open"} for e in openers]
    events += [{"email_address": e, "action": "open"} for e in clickers]  # read it twice
    events += [{"email_address": e, "action": "click", "url": "https://example.org/spring"} for e in clickers]
    events += [
        {"email_address": soft, "action": "bounce", "type": "soft"},
        {"email_address": hard, "action": "bounce", "type": "hard"},
        {"email_address": leaving, "action": "unsubscribe", "reason": "Too many emails"},
    ]
    mailchimp_admin.call("POST", f"campaigns/{campaign_id}/activity", {"events": events})
    return [
        f"the campaign '{title}' went to {sent['recipients']} Newsletter members",
        f"{len(openers)} opened it, {len(clickers)} of them twice and clicked a link",
        "1 address soft-bounced, 1 hard-bounced (Mailchimp cleaned it) and 1 person unsubscribed through "
        "the campaign's link",
    ]


def campaign_lines(ctx: Any, examples: int = 3) -> list[str]:
    """What Dynamics holds now: each campaign with its totals, its engagement rows, and the audited causes."""
    from shared.adapters.storage import CONSENT_AUDIT
    from shared.features.campaigns import core as campaigns

    p = ctx.settings.dataverse_prefix
    table, engagement = campaigns.campaign_table(p), campaigns.engagement_table(p)
    lines = []
    for page in ctx.dataverse.iter_pages(
        f"{table}s",
        select=[
            f"{p}_name",
            f"{p}_mailchimpid",
            f"{p}_sendtime",
            f"{p}_recipients",
            f"{p}_opens",
            f"{p}_uniqueopens",
            f"{p}_clicks",
            f"{p}_bounces",
            f"{p}_hardbounces",
            f"{p}_unsubscribes",
        ],
    ):
        for row in page:
            lines.append(
                f"campaign '{row[f'{p}_name']}' ({row[f'{p}_mailchimpid']}), sent {row[f'{p}_sendtime']}: "
                f"{row[f'{p}_recipients']:,} recipients; opens {row[f'{p}_opens']:,} "
                f"({row[f'{p}_uniqueopens']:,} people); clicks {row[f'{p}_clicks']:,}; bounces "
                f"{row[f'{p}_bounces']:,} ({row[f'{p}_hardbounces']:,} hard); unsubscribes "
                f"{row[f'{p}_unsubscribes']:,}"
            )
            lines += _engagement_lines(ctx, p, engagement, row[f"{table}id"], examples)
    for link in ctx.settings.links:
        causes = [
            row
            for row in ctx.storage.query(CONSENT_AUDIT, "link eq @l", {"l": link.name})
            if "in campaign" in str(row.get("detail") or "")
        ]
        for row in causes:
            lines.append(
                f"audit ({link.name}): member {row['member_hash'][:8]} {row['rule']}, Dynamics side "
                f"written; cause: {row['detail']}"
            )
    return lines or ["no campaign has reached Dynamics yet"]


def _engagement_lines(ctx: Any, p: str, table: str, campaign_row: str, examples: int) -> list[str]:
    rows = [
        row
        for page in ctx.dataverse.iter_pages(
            f"{table}s",
            select=[
                f"{p}_opens",
                f"{p}_clicks",
                f"{p}_bouncetype",
                f"{p}_unsubscribed",
                f"{p}_lastclickedurl",
                f"_{p}_contact_value",
                f"_{p}_lead_value",
                f"_{p}_account_value",
            ],
            filter=f"_{p}_campaign_value eq {campaign_row}",
        )
        for row in page
    ]
    opened = [r for r in rows if r[f"{p}_opens"]]
    clicked = [r for r in rows if r[f"{p}_clicks"]]
    lines = [
        f"  {len(rows):,} engagement rows (records in Dynamics only): {len(opened):,} opened, "
        f"{len(clicked):,} clicked, {sum(1 for r in rows if r[f'{p}_bouncetype']):,} bounced, "
        f"{sum(1 for r in rows if r[f'{p}_unsubscribed']):,} unsubscribed"
    ]
    for row in sorted(rows, key=lambda r: (-(r[f"{p}_clicks"] or 0), -(r[f"{p}_opens"] or 0)))[:examples]:
        record = row[f"_{p}_contact_value"] or row[f"_{p}_lead_value"] or row[f"_{p}_account_value"]
        lines.append(
            f"    record {record[:8]}: {row[f'{p}_opens']} opens, {row[f'{p}_clicks']} clicks"
            + (f" (last on {row[f'{p}_lastclickedurl']})" if row[f"{p}_clicks"] else "")
        )
    return lines
