"""Campaigns and their reports: who a campaign went to and what each recipient did with it.

Campaigns are created and "sent" through the admin API (the product never sends), and activity is
recorded there too; the ``/3.0/campaigns`` and ``/3.0/reports`` routes read it back in the shapes of
the real reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .audience import Audience, short_id
from .timestamps import format_epoch

ACTIVITY_ACTIONS = ("open", "click", "bounce", "unsubscribe")
CAMPAIGN_STATUSES = ("save", "paused", "schedule", "sending", "sent")
SAMPLE_IP = "198.51.100.7"


@dataclass
class Recipient:
    email_address: str
    hash: str
    merge_fields: dict[str, Any]
    vip: bool
    status: str = "sent"  # sent, hard or soft
    open_count: int = 0
    last_open: int | None = None
    activity: list[dict[str, Any]] = field(default_factory=list)
    last_event: int | None = None  # newest open, click or bounce: what ``since`` compares against

    def note(self, event: dict[str, Any]) -> None:
        self.activity.append(event)
        at = event["timestamp"]
        self.last_event = at if self.last_event is None else max(self.last_event, at)


@dataclass
class Campaign:
    id: str
    web_id: int
    list_id: str
    list_name: str
    title: str
    subject_line: str
    from_name: str
    create_time: int
    status: str = "save"
    send_time: int | None = None
    recipients: dict[str, Recipient] = field(default_factory=dict)
    unsubscribes: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        opens = sum(r.open_count for r in self.recipients.values())
        unique_opens = sum(1 for r in self.recipients.values() if r.open_count)
        clicks = [a for r in self.recipients.values() for a in r.activity if a["action"] == "click"]
        clickers = {r.hash for r in self.recipients.values() if any(a["action"] == "click" for a in r.activity)}
        sent = len(self.recipients)
        return {
            "opens": opens,
            "unique_opens": unique_opens,
            "open_rate": unique_opens / sent if sent else 0,
            "clicks": len(clicks),
            "subscriber_clicks": len(clickers),
            "click_rate": len(clickers) / sent if sent else 0,
        }


class CampaignBook:
    """All campaigns of the account."""

    def __init__(self) -> None:
        self.campaigns: dict[str, Campaign] = {}
        self.next_web_id = 500_001

    def create(self, audience: Audience, spec: dict[str, Any], now: int) -> Campaign:
        campaign_id = str(spec.get("id") or short_id("campaign", audience.id, self.next_web_id))
        if campaign_id in self.campaigns:
            raise ValueError(f"campaign {campaign_id} already exists")
        campaign = Campaign(
            id=campaign_id,
            web_id=self.next_web_id,
            list_id=audience.id,
            list_name=audience.name,
            title=str(spec.get("title") or f"Campaign {self.next_web_id}"),
            subject_line=str(spec.get("subject_line") or spec.get("title") or "News"),
            from_name=str(spec.get("from_name") or audience.name),
            create_time=now,
        )
        self.next_web_id += 1
        self.campaigns[campaign_id] = campaign
        return campaign

    @staticmethod
    def send(campaign: Campaign, audience: Audience, at: int) -> None:
        """Deliver to the audience's subscribed members as they are at this moment."""
        if campaign.status == "sent":
            raise ValueError(f"campaign {campaign.id} was already sent")
        for key in audience.index_by_status["subscribed"]:
            member = audience.members[key[2]]
            campaign.recipients[member.hash] = Recipient(
                member.email_address, member.hash, dict(member.merge_fields), member.vip
            )
        campaign.status = "sent"
        campaign.send_time = at

    @staticmethod
    def record(campaign: Campaign, recipient: Recipient, action: str, at: int, spec: dict[str, Any]) -> None:
        if action == "open":
            recipient.open_count += 1
            recipient.last_open = at if recipient.last_open is None else max(recipient.last_open, at)
            recipient.note({"action": "open", "timestamp": at, "ip": SAMPLE_IP})
        elif action == "click":
            if not spec.get("url"):
                raise ValueError("a click needs the url that was clicked")
            recipient.note({"action": "click", "timestamp": at, "url": str(spec["url"]), "ip": SAMPLE_IP})
        elif action == "bounce":
            kind = spec.get("type", "hard")
            if kind not in ("hard", "soft"):
                raise ValueError("a bounce is of type hard or soft")
            recipient.status = kind
            recipient.note({"action": "bounce", "type": kind, "timestamp": at})
        elif action == "unsubscribe":
            campaign.unsubscribes.append(
                {
                    "hash": recipient.hash,
                    "email_address": recipient.email_address,
                    "merge_fields": recipient.merge_fields,
                    "vip": recipient.vip,
                    "timestamp": at,
                    "reason": str(spec.get("reason") or ""),
                }
            )
        else:
            raise ValueError(f"unknown action {action!r}: use one of {', '.join(ACTIVITY_ACTIONS)}")


def render_campaign(campaign: Campaign, base: str) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "web_id": campaign.web_id,
        "type": "regular",
        "create_time": format_epoch(campaign.create_time),
        "archive_url": f"https://eepurl.com/{campaign.id}",
        "long_archive_url": "",
        "status": campaign.status,
        "emails_sent": len(campaign.recipients),
        "send_time": format_epoch(campaign.send_time),
        "content_type": "template",
        "needs_block_refresh": False,
        "resendable": False,
        "recipients": {
            "list_id": campaign.list_id,
            "list_is_active": True,
            "list_name": campaign.list_name,
            "segment_text": "",
            "recipient_count": len(campaign.recipients),
        },
        "settings": {
            "subject_line": campaign.subject_line,
            "title": campaign.title,
            "from_name": campaign.from_name,
            "reply_to": "",
            "use_conversation": False,
            "to_name": "",
            "folder_id": "",
            "authenticate": True,
            "auto_footer": False,
            "inline_css": False,
            "auto_tweet": False,
            "fb_comments": False,
            "timewarp": False,
            "template_id": 0,
            "drag_and_drop": True,
        },
        "tracking": {
            "opens": True,
            "html_clicks": True,
            "text_clicks": False,
            "goal_tracking": False,
            "ecomm360": False,
            "google_analytics": "",
            "clicktale": "",
        },
        "report_summary": campaign.summary() if campaign.status == "sent" else None,
        "delivery_status": {"enabled": False},
        "_links": [{"rel": "self", "href": f"{base}/3.0/campaigns/{campaign.id}", "method": "GET"}],
    }


def render_report(campaign: Campaign, base: str) -> dict[str, Any]:
    summary = campaign.summary()
    opens = [a["timestamp"] for r in campaign.recipients.values() for a in r.activity if a["action"] == "open"]
    clicks = [a["timestamp"] for r in campaign.recipients.values() for a in r.activity if a["action"] == "click"]
    bounces = [r.status for r in campaign.recipients.values()]
    return {
        "id": campaign.id,
        "campaign_title": campaign.title,
        "type": "regular",
        "list_id": campaign.list_id,
        "list_is_active": True,
        "list_name": campaign.list_name,
        "subject_line": campaign.subject_line,
        "preview_text": "",
        "emails_sent": len(campaign.recipients),
        "abuse_reports": 0,
        "unsubscribed": len(campaign.unsubscribes),
        "send_time": format_epoch(campaign.send_time),
        "bounces": {"hard_bounces": bounces.count("hard"), "soft_bounces": bounces.count("soft"), "syntax_errors": 0},
        "forwards": {"forwards_count": 0, "forwards_opens": 0},
        "opens": {
            "opens_total": summary["opens"],
            "unique_opens": summary["unique_opens"],
            "open_rate": summary["open_rate"],
            "last_open": format_epoch(max(opens) if opens else None),
        },
        "clicks": {
            "clicks_total": summary["clicks"],
            "unique_clicks": summary["subscriber_clicks"],
            "unique_subscriber_clicks": summary["subscriber_clicks"],
            "click_rate": summary["click_rate"],
            "last_click": format_epoch(max(clicks) if clicks else None),
        },
        "_links": [{"rel": "self", "href": f"{base}/3.0/reports/{campaign.id}", "method": "GET"}],
    }


def render_sent_to(campaign: Campaign, recipient: Recipient) -> dict[str, Any]:
    return {
        "email_id": recipient.hash,
        "email_address": recipient.email_address,
        "merge_fields": recipient.merge_fields,
        "vip": recipient.vip,
        "status": recipient.status,
        "open_count": recipient.open_count,
        "last_open": format_epoch(recipient.last_open),
        "absplit_group": "",
        "gmt_offset": 0,
        "campaign_id": campaign.id,
        "list_id": campaign.list_id,
        "list_is_active": True,
    }


def render_email_activity(campaign: Campaign, recipient: Recipient, since: float | None) -> dict[str, Any] | None:
    """A recipient's opens, clicks and bounces; with ``since`` only later events, and None when there are none."""
    events = [a for a in recipient.activity if since is None or a["timestamp"] > since]
    if since is not None and not events:
        return None
    return {
        "campaign_id": campaign.id,
        "list_id": campaign.list_id,
        "list_is_active": True,
        "email_id": recipient.hash,
        "email_address": recipient.email_address,
        "activity": [{**a, "timestamp": format_epoch(a["timestamp"])} for a in events],
    }


def render_unsubscribe(campaign: Campaign, entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "email_id": entry["hash"],
        "email_address": entry["email_address"],
        "merge_fields": entry["merge_fields"],
        "vip": entry["vip"],
        "timestamp": format_epoch(entry["timestamp"]),
        "reason": entry["reason"],
        "campaign_id": campaign.id,
        "list_id": campaign.list_id,
        "list_is_active": True,
    }
