"""Consent per audience: how a record's audience memberships roll up into its opt-out columns, and who changed what.

design.md rules 2 and 3 (as amended) are the authority. Each linked audience keeps its own agreed status per
record (the base of that (record, audience) pair); the opt-out columns are a roll-up of those statuses under
OPT_OUT_ROLLUP. Three kinds of change meet on a record, and these functions tell them apart:

- the product's own roll-up: the columns hold what the statuses roll up to. Nobody changed anything in
  Dynamics; each audience keeps the opt-out meaning it agreed on (an unsubscribe from one audience is not an
  opt-out from the others).
- a user's global opt-out (or opt-in): the columns differ from the roll-up. That is a change made by a person,
  and every audience reads it (a global opt-out unsubscribes the member in every linked audience).
- a user's scoped opt-out (or opt-in): a membership's status was edited in Dynamics. Only that audience reads it.

A record in one audience only keeps the behaviour of a single link exactly: the columns are its opt-out.

Who changed a membership in Mailchimp and why comes from what Mailchimp reports (``Reported``): the member's
``unsubscribe_reason`` (an admin's or an API unsubscribe reads "N/A (Unsubscribed by admin)", also seen as
"N/A (Unsubscribed by an admin)"; any other reason is the person's own) and, for a real-time event, the
webhook's ``data[reason]`` and ``data[campaign_id]``.

Nothing here reads, writes or logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from shared.rules.consent import OPTED_OUT_STATUSES, SUBSCRIBER_STATUS_CODES

Rollup = Literal["all", "any"]
Change = Literal["none", "global", "scoped"]
ROLLUPS: tuple[Rollup, ...] = ("all", "any")

# cbr_source (contract): who changed a membership
SOURCE_SUBSCRIBER, SOURCE_ADMIN, SOURCE_DYNAMICS_USER, SOURCE_PRODUCT = 100000000, 100000001, 100000002, 100000003
SOURCE_LABELS = {
    SOURCE_SUBSCRIBER: "Mailchimp subscriber",
    SOURCE_ADMIN: "Mailchimp admin",
    SOURCE_DYNAMICS_USER: "Dynamics user",
    SOURCE_PRODUCT: "Consent Bridge",
}
# cbr_side (contract): which side a consent change was written to
SIDE_MAILCHIMP, SIDE_DYNAMICS = 100000000, 100000001
SIDE_LABELS = {SIDE_MAILCHIMP: "Mailchimp", SIDE_DYNAMICS: "Dynamics"}

STATUS_BY_CODE = {code: status for status, code in SUBSCRIBER_STATUS_CODES.items()}

# the unsubscribe_reason Mailchimp gives an unsubscribe made by an admin in the web app or through the API
_ADMIN_REASON = re.compile(r"N/A \(Unsubscribed by (an )?admin\)", re.IGNORECASE)

# rules after which Mailchimp's own status came from the person or their audience's admin
_MAILCHIMP_RULES = frozenset({"mailchimp-changed", "both-changed-mailchimp-newer"})
# rules that act on a change a Dynamics user made
_DYNAMICS_RULES = frozenset(
    {"dynamics-opt-out", "dynamics-opt-in", "resubscribe-blocked", "resubscribe-confirm", "both-changed-opt-out-wins"}
)


def counts_as_opted_out(status: str) -> bool:
    """Rule 2: unsubscribed, cleaned and transactional are opted out; subscribed, pending and archived are not."""
    return status in OPTED_OUT_STATUSES


def roll_up(statuses: Iterable[str | None], policy: Rollup) -> bool | None:
    """The opt-out columns' value for a record whose audiences hold these statuses (None: not a member there).

    ``all``: opted out when every membership is opted out; ``any``: when one is. None when the record is a
    member of no audience: nothing to roll up, the columns are left as they are."""
    flags = [counts_as_opted_out(status) for status in statuses if status is not None]
    if not flags:
        return None
    return all(flags) if policy == "all" else any(flags)


@dataclass(frozen=True)
class RecordView:
    """One record as one link sees it before deciding.

    ``columns``: any opt-out column is true now. ``status``: this audience's agreed status (None: not agreed, or
    not a member). ``agreed``: this audience's agreed opt-out meaning for the record (None: no agreement yet).
    ``others``: the agreed statuses of the record's memberships in the other linked audiences. ``scoped``: the
    status a Dynamics user gave this audience's membership, when it differs from the agreed one."""

    columns: bool
    status: str | None
    agreed: bool | None
    others: tuple[str, ...] = ()
    scoped: str | None = None

    @property
    def shared(self) -> bool:
        """The record belongs to more than one linked audience: its columns are a roll-up."""
        return bool(self.others)

    def expected(self, policy: Rollup) -> bool | None:
        """What the columns hold when nobody but the product wrote them."""
        return roll_up([self.status, *self.others], policy)


def change_of(view: RecordView, policy: Rollup) -> Change:
    """Who changed the record's consent in Dynamics since the audiences agreed: nobody, a global or a scoped edit."""
    if view.shared:
        expected = view.expected(policy)
        if expected is not None and view.columns != expected:
            return "global"
    if view.scoped is not None:
        return "scoped"
    return "none"


def audience_opt_out(view: RecordView, policy: Rollup) -> bool:
    """D for this audience (rule 3): the record's opt-out as this audience's consent rules read it.

    A global edit is read by every audience; a scoped edit by its own; otherwise the audience keeps what it
    agreed, so that the product's roll-up is never read back as a person's opt-out. A record with one
    membership reads its columns, as with a single link."""
    change = change_of(view, policy)
    if change == "global":
        return view.columns
    if change == "scoped" and view.scoped is not None:
        return counts_as_opted_out(view.scoped)
    return bool(view.agreed) if view.shared else view.columns


def column_target(view: RecordView, status_after: str | None, policy: Rollup) -> bool | None:
    """The opt-out columns' value to write once this audience's status is ``status_after`` (None: leave them).

    Only for records shared by several audiences (a single link's columns follow its own rules). A user's
    global opt-out stays until every audience has followed it: the roll-up never clears it midway."""
    if not view.shared:
        return None
    if view.columns and change_of(view, policy) == "global":
        return None
    target = roll_up([status_after, *view.others], policy)
    return None if target is None or target == view.columns else target


@dataclass(frozen=True)
class Reported:
    """What Mailchimp reported about the change that gave a member its status.

    ``status``: the member's status as read. ``unsubscribe_reason``: the member's field (Mailchimp shows it on
    unsubscribed members only; None: none, or not read). ``event_reason``: a webhook's ``data[reason]``
    (``manual`` or ``abuse`` for an unsubscribe, ``hard`` or ``abuse`` for a cleaned member). ``campaign_id``:
    the campaign the webhook named as the cause."""

    status: str | None
    unsubscribe_reason: str | None = None
    event_reason: str | None = None
    campaign_id: str | None = None

    @property
    def reason(self) -> str:
        """The member's unsubscribe reason, when the member is unsubscribed and Mailchimp gave one."""
        return (self.unsubscribe_reason or "").strip() if self.status == "unsubscribed" else ""

    @property
    def by_admin(self) -> bool:
        """An admin (in the web app, or through the API) unsubscribed the member, not the person."""
        return _ADMIN_REASON.fullmatch(self.reason) is not None

    @property
    def abuse(self) -> bool:
        """The person reported a campaign as spam."""
        return (self.event_reason or "").strip().lower() == "abuse"

    def words(self) -> str:
        """Mailchimp's account of the change, for cbr_reason and cbr_cause ("" when Mailchimp said nothing)."""
        campaign = f" in campaign {self.campaign_id}" if self.campaign_id else ""
        if self.status == "cleaned":
            what = "the address bounced"  # Mailchimp cleans after a hard bounce or repeated soft ones
            if self.abuse:
                what = "an abuse complaint"
            elif (self.event_reason or "").strip().lower() == "hard":
                what = "a hard bounce"
            return f"cleaned by Mailchimp: {what}{campaign}"
        if self.status != "unsubscribed":
            return ""
        if self.by_admin:
            return f"unsubscribed by an admin in Mailchimp{campaign}"
        if self.abuse:
            text = f"the person reported {f'campaign {self.campaign_id}' if self.campaign_id else 'a campaign'} as spam"
        elif self.reason or self.unsubscribe_reason is not None or campaign:
            text = f"unsubscribed by the person{campaign}"
        else:
            return ""
        return f'{text}, reason: "{self.reason}"' if self.reason else text


def source_of(rule: str, *, scoped: bool = False, reported: Reported | None = None) -> int:
    """cbr_source of a membership after a decision: who made its status what it is. A Mailchimp change, or a
    status whose change Mailchimp accounts for (an unsubscribe, a cleaning): the admin when Mailchimp's
    unsubscribe reason says an admin did it, otherwise the person."""
    if scoped or rule in _DYNAMICS_RULES:
        return SOURCE_DYNAMICS_USER
    if rule in _MAILCHIMP_RULES or (reported is not None and reported.words()):
        return SOURCE_ADMIN if reported is not None and reported.by_admin else SOURCE_SUBSCRIBER
    return SOURCE_PRODUCT


def reason_text(reported: Reported | None, rule_words: str, limit: int) -> str:
    """cbr_reason (and cbr_cause): Mailchimp's account of the change, then the deciding rule's words; at most
    ``limit`` characters, the rule's words kept whole when Mailchimp's (a person's free text) must be cut."""
    mailchimp = reported.words() if reported is not None else ""
    if not mailchimp:
        return rule_words[:limit]
    if not rule_words:
        return mailchimp[:limit]
    tail = f"; {rule_words}"
    room = limit - len(tail)
    if room < 20:
        return f"{mailchimp}{tail}"[:limit]
    if len(mailchimp) > room:
        mailchimp = mailchimp[: room - 1] + "…"
    return f"{mailchimp}{tail}"


def describe(status: str | None, opted_out: bool | None = None) -> str:
    """A value of cbr_oldvalue / cbr_newvalue: a membership status, and the opt-out columns when they moved."""
    text = status or "absent"
    if opted_out is not None:
        text += f"; opt-out columns {'set' if opted_out else 'clear'}"
    return text
