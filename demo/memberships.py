"""Consent per audience as a Dynamics user sees it: membership rows and the consent history on the records."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shared.features.memberships.schema import Names
from shared.rules.memberships import SIDE_LABELS, STATUS_BY_CODE


def report(dataverse_admin: Any, prefix: str = "cbr", examples: int = 3) -> list[str]:
    """Membership rows counted by audience and status, then the newest consent history rows."""
    names = Names(prefix)
    c = names.column
    memberships = dataverse_admin.state(entity=names.membership_set)["rows"]
    counted = Counter(
        (row.get(c("audiencename")), STATUS_BY_CODE.get(row.get(c("status")), "?")) for row in memberships
    )
    lines = [
        f"{audience}: " + ", ".join(f"{n} {status}" for (a, status), n in sorted(counted.items()) if a == audience)
        for audience in sorted({a for a, _ in counted})
    ]
    history = dataverse_admin.state(entity=names.change_set)["rows"]
    lines.append(f"consent history: {len(history)} row(s); the newest:")
    for row in sorted(history, key=lambda r: r.get(c("occurredon")) or "", reverse=True)[:examples]:
        lines.append(
            f"  {row.get(c('occurredon'))} {SIDE_LABELS.get(row.get(c('side')), '?')} "
            f"[{row.get(c('rule'))}] {row.get(c('oldvalue'))} -> {row.get(c('newvalue'))}: {row.get(c('cause'))}"
        )
    return lines
