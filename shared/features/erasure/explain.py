"""What the product holds about one person, for a support question or an access request.

Everything is read by the person's member hash (or their address, for the Dynamics records holding it): the
bases of every link, the tombstones, and the ConsentAudit rows in time order, exactly as stored. Nothing of
another person is read or shown: rows are selected by this hash alone.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from shared.adapters.ports import Services
from shared.model.times import iso
from shared.rules.addresses import member_hash
from shared.state.audit import AuditLog
from shared.state.identity import BaseRow, IdentityMap
from shared.state.tombstones import Tombstones

from .forget import address_of, records_holding

AUDIT_FIELDS = (
    "when",
    "link",
    "run_id",
    "member_hash",
    "record_ids",
    "side",
    "rule",
    "mailchimp_old",
    "mailchimp_new",
    "dynamics_old",
    "dynamics_new",
    "skipped",
    "detail",
    "member_last_changed",
    "records_modifiedon",
)
FEATURE_RULE_PREFIXES = ("preference-", "field-")  # changes that are not consent: listed apart


def explain(ctx: Services, text: str) -> dict[str, Any]:
    """The person's data as plain JSON-ready values; raises AddressError for text that is not an address."""
    email = address_of(text)
    hashed = member_hash(email)
    history = [_audit_row(row) for row in AuditLog(ctx.storage).history(hashed)]
    identity = IdentityMap(ctx.storage)
    problems: list[str] = []
    links = []
    for link in ctx.settings.links:
        base = identity.load(link.name, [hashed]).get(hashed)
        changes = [
            row for row in history if row["link"] == link.name and not row["rule"].startswith(FEATURE_RULE_PREFIXES)
        ]
        links.append(
            {
                "link": link.name,
                "audience_id": link.audience_id,
                "marketing_list_id": link.marketing_list_id,
                "status": (base.member_status or "not in the audience") if base else "unknown to Consent Bridge",
                "status_since": iso(base.member_last_changed) if base else None,
                "why": _why(changes[-1]) if changes else None,
                "records": [{"kind": kind, "id": record_id} for record_id, kind in base.records] if base else [],
                "base": _base(base) if base else None,
            }
        )
    return {
        "email": email,
        "member_hash": hashed,
        "links": links,
        "dynamics_records": [
            {"kind": kind, "id": rid} for kind, rid in records_holding(ctx.dataverse, email, problems)
        ],
        "tombstones": [
            {"scope": stone.scope, "reason": stone.reason, "when": iso(stone.when)}
            for stone in Tombstones(ctx.storage).of(hashed)
        ],
        "consent_history": [row for row in history if not row["rule"].startswith(FEATURE_RULE_PREFIXES)],
        "field_and_preference_changes": [row for row in history if row["rule"].startswith(FEATURE_RULE_PREFIXES)],
        "problems": problems,
    }


def _audit_row(row: dict[str, Any]) -> dict[str, Any]:
    found = {name: row.get(name, "") for name in AUDIT_FIELDS}
    found["when"] = iso(row["when"]) if isinstance(row.get("when"), datetime) else row.get("when")
    return found


def _why(row: dict[str, Any]) -> str:
    """The latest consent row of a link: the rule that decided, when, and what it wrote."""
    return f"{row['rule']} on {row['when']} (run {row['run_id']}): {_history_line(row)}"


def _base(base: BaseRow) -> dict[str, Any]:
    return {
        "email": base.email,
        "member_status": base.member_status,
        "opted_out": base.opted_out,
        "opted_out_records": base.opted_out_records,
        "member_last_changed": iso(base.member_last_changed),
        "records_modifiedon": iso(base.records_modifiedon),
        "contact_id": base.contact_id,
        "tagged": base.tagged,
        "refused": base.refused,
        "skipped": base.skipped,
        "interests": base.interests,
        "held_preferences": base.held,
        "preferences_modifiedon": iso(base.preferences_modifiedon),
    }


def render(found: dict[str, Any]) -> str:
    """The plain-text form of ``explain``'s answer."""
    lines = [f"{found['email']} (member hash {found['member_hash']})"]
    for stone in found["tombstones"]:
        where = "every link" if stone["scope"] == "*" else f"link {stone['scope']}"
        lines.append(f"forgotten in {where} since {stone['when']} ({stone['reason']}): never added again")
    for link in found["links"]:
        lines.append(
            f"link {link['link']} (audience {link['audience_id']}, marketing list {link['marketing_list_id']}):"
        )
        since = f" since {link['status_since']}" if link["status_since"] else ""
        lines.append(f"  status: {link['status']}{since}")
        if link["why"]:
            lines.append(f"  why: {link['why']}")
        for record in link["records"]:
            lines.append(f"  record: {record['kind']} {record['id']}")
        if link["base"]:
            lines.append(f"  base: {json.dumps(link['base'], sort_keys=True)}")
    lines += [f"could not be read: {problem}" for problem in found["problems"]]
    held = found["dynamics_records"]
    lines.append(f"Dynamics records holding the address: {len(held)}")
    lines += [f"  {record['kind']} {record['id']}" for record in held]
    for title, rows in (
        ("consent history", found["consent_history"]),
        ("field and preference changes", found["field_and_preference_changes"]),
    ):
        lines.append(f"{title} ({len(rows)} row(s), oldest first):")
        lines += [f"  {_history_line(row)}" for row in rows]
    return "\n".join(lines)


def _history_line(row: dict[str, Any]) -> str:
    parts = [f"{row['when']} {row['link']} {row['rule']} (run {row['run_id']}, side {row['side']})"]
    if row["mailchimp_new"]:
        parts.append(f"Mailchimp {row['mailchimp_old'] or '-'} -> {row['mailchimp_new']}")
    if row["dynamics_new"]:
        parts.append(f"Dynamics {row['dynamics_old'] or '-'} -> {row['dynamics_new']}")
    if row["skipped"]:
        parts.append(f"skipped {row['skipped']}")
    if row["detail"]:
        parts.append(row["detail"])
    return "; ".join(parts)
