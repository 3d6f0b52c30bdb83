"""What the status row says, in words a Dynamics user reads: a run's counts, and the first error they can act on."""

from __future__ import annotations

from collections.abc import Mapping

from shared.adapters.dataverse import DataverseError
from shared.adapters.mailchimp import MailchimpError
from shared.errors import ConsentBridgeError
from shared.rules.addresses import redact_emails

ERROR_LENGTH = 2000  # the cbr_lasterror column's length


def summary(counts: Mapping[str, int], *, dead_batches: int = 0, dead_members: int = 0, dry_run: bool = False) -> str:
    """ "read 1,750 members and 2,001 records; wrote 5 to Mailchimp and 13 to Dynamics; 1 skipped: invalid address"."""
    parts = [
        f"read {_n(counts.get('mailchimp_read', 0))} members and {_n(counts.get('dataverse_read', 0))} records",
        f"{'would write' if dry_run else 'wrote'} {_n(counts.get('mailchimp_writes', 0))} to Mailchimp and "
        f"{_n(counts.get('dynamics_writes', 0))} to Dynamics",
    ]
    skips = sorted(
        ((n, key.split(":", 1)[1].replace("-", " ")) for key, n in counts.items() if key.startswith("skip:") and n),
        key=lambda item: (-item[0], item[1]),
    )
    if len(skips) == 1:
        parts.append(f"{_n(skips[0][0])} skipped: {skips[0][1]}")
    elif skips:
        total = sum(n for n, _ in skips)
        parts.append(f"{_n(total)} skipped: " + ", ".join(f"{_n(n)} {reason}" for n, reason in skips))
    if dead_batches:
        parts.append(
            f"{_n(dead_batches)} batch{'es' if dead_batches != 1 else ''} of {_n(dead_members)} members set aside "
            "for the next run"
        )
    return ("dry run: " if dry_run else "") + "; ".join(parts)


def person_error(exc: BaseException, run_id: str) -> str:
    """The error as a person can act on it: the setting, link, record or member hash and what to do; never a
    stack trace, an address or a secret. An error nobody foresaw is named by its type and run only."""
    if isinstance(exc, ConsentBridgeError | MailchimpError | DataverseError):
        return clip(redact_emails(str(exc)))
    return clip(
        f"an unexpected {type(exc).__name__} stopped run {run_id}: a fault in Consent Bridge, not in your data; "
        "search Application Insights for the run id and report it"
    )


def partial_error(dead_batches: int, dead_members: int, first_error: str) -> str:
    text = (
        f"{_n(dead_batches)} batch{'es' if dead_batches != 1 else ''} failed every attempt and "
        f"{'were' if dead_batches != 1 else 'was'} set aside; {'their' if dead_batches != 1 else 'its'} "
        f"{_n(dead_members)} members are retried by the next run"
    )
    return clip(f"{text}. First error: {first_error}" if first_error else text)


def clip(text: str) -> str:
    return text if len(text) <= ERROR_LENGTH else text[: ERROR_LENGTH - 1] + "…"


def _n(value: int) -> str:
    return f"{value:,}"
