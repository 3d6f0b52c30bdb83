"""What Mailchimp reported about a member's status change travels with the member: a retried group's encoding keeps
the unsubscribe reason and a webhook's reason and campaign, the batch message keeps the unsubscribe reason, and
both still read what the releases before them wrote."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.model.snapshots import Group, MemberSnapshot
from shared.model.wire import BatchMessage, pack, unpack
from shared.rules.addresses import member_hash

ADA = "ada@example.com"
CHANGED = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def snapshot(**cause: Any) -> MemberSnapshot:
    return MemberSnapshot(ADA, "unsubscribed", CHANGED, "c-1", CHANGED, **cause)


@pytest.mark.parametrize(
    "member",
    [
        snapshot(unsubscribe_reason="Too many emails", event_reason="manual", campaign_id="5f2a"),
        snapshot(unsubscribe_reason=""),  # read, and empty: not the same as not read
        snapshot(campaign_id="5f2a"),
        snapshot(merge_fields={"FNAME": "Ada"}, unsubscribe_reason="N/A (Unsubscribed by admin)"),
        snapshot(),
    ],
)
def test_a_retried_groups_member_keeps_what_mailchimp_reported(member):
    assert MemberSnapshot.decode(member.encode()) == member


def test_a_member_encoded_before_the_causes_reads_with_none():
    old = [ADA, "unsubscribed", int(CHANGED.timestamp()), "c-1", int(CHANGED.timestamp()), None]
    back = MemberSnapshot.decode(old)
    assert (back.unsubscribe_reason, back.event_reason, back.campaign_id) == (None, None, None)
    assert snapshot().encode() == old  # nothing reported: encoded exactly as before


@pytest.mark.parametrize(
    ("interests", "merge_fields"), [(None, None), (["i1"], None), (None, {"FNAME": "Ada"}), (["i1"], {"FNAME": "A"})]
)
@pytest.mark.parametrize("reason", ["Too many emails", "", None])
def test_the_batch_message_carries_the_unsubscribe_reason_beside_interests_and_merge_fields(
    interests, merge_fields, reason
):
    member = snapshot(unsubscribe_reason=reason, merge_fields=merge_fields)
    member.interests = interests
    group = Group(member_hash(ADA), ADA, member, True)
    back = unpack(pack(group, [], ["i1", "i2"]), [], ["i1", "i2"], hasher=member_hash).member
    assert back is not None
    assert (back.unsubscribe_reason, back.merge_fields, back.interests) == (reason, merge_fields, interests)


def test_a_batch_message_without_reasons_packs_as_before():
    group = Group(member_hash(ADA), ADA, snapshot(), True)
    assert pack(group, [], [])[1] == ["unsubscribed", int(CHANGED.timestamp()), None, int(CHANGED.timestamp())]
    message = BatchMessage("l", "r", "b", False, False, [group])
    back = BatchMessage.decode(message.encode(), hasher=member_hash).groups[0].member
    assert back == replace(snapshot(), contact_id=None)  # the contact id is left out unless an address moved
