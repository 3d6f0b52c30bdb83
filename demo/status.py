"""The link rows as a Dynamics user sees them in the "Sync links" view (cbr_synclink)."""

from __future__ import annotations

from typing import Any

from shared.features.status.schema import OUTCOME_LABELS


def link_rows(dataverse_admin: Any, prefix: str = "cbr") -> list[str]:
    """One block per row: name, last outcome, last finished, next run, last error, then the summary."""
    rows = dataverse_admin.state(entity=f"{prefix}_synclinks")["rows"]
    lines = []
    for row in sorted(rows, key=lambda r: r.get(f"{prefix}_name") or ""):
        outcome = OUTCOME_LABELS.get(row.get(f"{prefix}_lastoutcome"), "-")
        lines.append(
            f"{row.get(f'{prefix}_name')}: {outcome}; last finished {row.get(f'{prefix}_lastfinished') or '-'}; "
            f"next run {row.get(f'{prefix}_nextrun') or '-'}; last error: {row.get(f'{prefix}_lasterror') or 'none'}"
        )
        lines.append(f"    {row.get(f'{prefix}_lastsummary') or ''}")
    return lines
