"""The mapped values travel with their groups in the batch message, and older messages without them still read."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.model.snapshots import Group, MemberSnapshot, RecordSnapshot
from shared.model.wire import BatchMessage, pack, unpack
from shared.rules.addresses import member_hash

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ADDRESS = {"line1": "1 Main St", "line2": None, "city": "Springfield"}


def group(interests: list[str] | None) -> Group:
    email = "kim@example.org"
    return Group(
        member_hash(email),
        email,
        MemberSnapshot(email, "subscribed", AT, None, AT, interests, {"FNAME": "Kim", "ADDRESS": ""}),
        True,
        [
            RecordSnapshot(
                "r1", "contact", email, {"donotbulkemail": False}, AT, 0, None, {"address1_composite": ADDRESS}
            )
        ],
    )


def test_merge_fields_and_columns_survive_the_batch_message_with_and_without_interests():
    for interests, catalog in ((None, []), (["i1"], [["i1", "News"]])):
        message = BatchMessage("l", "r", "b", False, False, [group(interests)], ["donotbulkemail"], catalog)
        (back,) = BatchMessage.decode(message.encode(), hasher=member_hash).groups
        assert back.member is not None and back.member.merge_fields == {"FNAME": "Kim", "ADDRESS": ""}
        assert back.member.interests == interests
        assert back.records[0].fields == {"address1_composite": ADDRESS}


def test_a_group_packed_without_mapped_values_reads_as_not_read():
    plain = group(None)
    plain.member.merge_fields = None  # type: ignore[union-attr]
    plain.records[0].fields = None
    back = unpack(pack(plain, ["donotbulkemail"]), ["donotbulkemail"], hasher=member_hash)
    assert back.member is not None and back.member.merge_fields is None
    assert back.records[0].fields is None
    assert MemberSnapshot.decode(plain.member.encode()).merge_fields is None  # type: ignore[union-attr]
    assert RecordSnapshot.decode(plain.records[0].encode()).fields is None
