"""Mapped fields: every conversion both ways, and the merge per field (rule 11), with a property over edits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.rules import fields
from shared.rules.fields import MergeDefinition, Reading, merge
from shared.settings import FieldMapping

TEXT = MergeDefinition("FNAME")
NUMBER = MergeDefinition("SEATS", "number")
DATE_US = MergeDefinition("JOINED", "date", date_format="MM/DD/YYYY")
DATE_EU = MergeDefinition("JOINED", "date", date_format="DD/MM/YYYY")
BIRTHDAY = MergeDefinition("BIRTHDAY", "birthday", date_format="MM/DD")
BIRTHDAY_EU = MergeDefinition("BIRTHDAY", "birthday", date_format="DD/MM")
PHONE = MergeDefinition("PHONE", "phone")
ADDRESS = MergeDefinition("ADDRESS", "address")
T0 = datetime(2025, 1, 1, tzinfo=UTC)


# ---- conversions, Dynamics -> Mailchimp and back -------------------------------------------------
def test_text_is_trimmed_and_cut_to_the_merge_fields_length():
    assert fields.to_mailchimp(TEXT, "  Jane  ") == fields.Converted("Jane")
    long = "x" * 300
    converted = fields.to_mailchimp(TEXT, long)
    assert converted.value == "x" * 255 and converted.cut
    assert fields.to_mailchimp(MergeDefinition("SHORT", size=5), "abcdefgh").value == "abcde"
    assert fields.to_mailchimp(TEXT, None).value == ""
    assert fields.to_dynamics(TEXT, " Jane ").value == "Jane"
    assert fields.to_dynamics(TEXT, "").value is None  # an empty merge field clears the column


def test_a_required_merge_field_refuses_an_empty_value():
    required = MergeDefinition("LNAME", required=True)
    assert fields.to_mailchimp(required, None).refused == "required-field-empty"
    assert fields.to_mailchimp(required, "   ").refused == "required-field-empty"
    assert fields.to_mailchimp(required, "Doe").value == "Doe"


def test_numbers_both_ways():
    assert fields.to_mailchimp(NUMBER, 12).value == 12
    assert fields.to_mailchimp(NUMBER, 12.0).value == 12
    assert fields.to_mailchimp(NUMBER, "3.5").value == 3.5
    assert fields.to_mailchimp(NUMBER, "1,200").value == 1200
    assert fields.to_mailchimp(NUMBER, "many").refused == "not-a-number"
    assert fields.to_dynamics(NUMBER, "7").value == 7
    assert fields.to_dynamics(NUMBER, 2.25).value == 2.25
    assert fields.to_dynamics(NUMBER, "seven").refused == "not-a-number"
    assert fields.to_dynamics(NUMBER, "").value is None


def test_dates_follow_the_merge_fields_date_format():
    assert fields.to_mailchimp(DATE_US, "2024-03-05").value == "03/05/2024"
    assert fields.to_mailchimp(DATE_EU, "2024-03-05T00:00:00Z").value == "05/03/2024"
    assert fields.to_mailchimp(DATE_US, "soon").refused == "not-a-date"
    assert fields.to_dynamics(DATE_US, "03/05/2024").value == "2024-03-05"
    assert fields.to_dynamics(DATE_EU, "05/03/2024").value == "2024-03-05"
    assert fields.to_dynamics(DATE_EU, "2024-03-05").value == "2024-03-05"  # the ISO form is read too
    assert fields.to_dynamics(DATE_US, "02/30/2024").refused == "not-a-date"
    assert fields.mailchimp_form(DATE_EU, "2024-03-05") == "05/03/2024"


def test_birthdays_are_month_and_day():
    assert fields.to_mailchimp(BIRTHDAY, "1990-07-14").value == "07/14"
    assert fields.to_mailchimp(BIRTHDAY_EU, "1990-07-14").value == "14/07"
    assert fields.to_mailchimp(BIRTHDAY, "someday").refused == "not-a-date"
    assert fields.to_dynamics(BIRTHDAY, "07/14", "1990-01-01").value == "1990-07-14"  # the record's year is kept
    assert fields.to_dynamics(BIRTHDAY_EU, "14/07").value == "2000-07-14"
    assert fields.to_dynamics(BIRTHDAY, "02/29", "1991-05-05").value == "2000-02-29"
    assert fields.to_dynamics(BIRTHDAY, "13/40").refused == "not-a-date"
    assert fields.mailchimp_form(BIRTHDAY, "7/4") == "07/04"


def test_phone_numbers():
    assert fields.to_mailchimp(PHONE, " +44 20 7946 0000 ").value == "+44 20 7946 0000"
    assert fields.to_mailchimp(PHONE, "n/a").refused == "not-a-phone-number"
    assert fields.to_dynamics(PHONE, "555-0100").value == "555-0100"


def test_the_address_composite_both_ways():
    parts = {
        "line1": "1 Main St",
        "line2": None,
        "city": "Springfield",
        "stateorprovince": "IL",
        "postalcode": "62701",
        "country": "US",
    }
    row = {f"address1_{k}": v for k, v in parts.items()}
    assert fields.columns_read("address1_composite") == [f"address1_{k}" for k in parts]
    value = fields.record_value("address1_composite", row)
    assert value == parts
    converted = fields.to_mailchimp(ADDRESS, value)
    assert converted.value == {
        "addr1": "1 Main St",
        "addr2": "",
        "city": "Springfield",
        "state": "IL",
        "zip": "62701",
        "country": "US",
    }
    back = fields.to_dynamics(ADDRESS, converted.value)
    assert fields.patch_columns("address1_composite", back.value) == row
    assert fields.to_mailchimp(ADDRESS, {**parts, "city": ""}).refused == "incomplete-address (city missing)"
    assert fields.record_value("address2_composite", {}) is None
    assert fields.to_mailchimp(ADDRESS, None).value == ""
    assert fields.to_dynamics(ADDRESS, "").value == dict.fromkeys(parts)


def test_kinds_default_to_the_tables_that_have_the_column():
    assert fields.kinds_of(FieldMapping("firstname", "FNAME")) == ("contact", "lead")
    assert fields.kinds_of(FieldMapping("name", "COMPANY")) == ("account",)
    assert fields.kinds_of(FieldMapping("name", "COMPANY", kinds=("lead",))) == ("lead",)
    assert fields.kinds_of(FieldMapping("cbr_custom", "CUSTOM")) == ("contact", "lead", "account")
    assert [m.column for m in fields.for_kind([FieldMapping("firstname", "FNAME")], "account")] == []


def test_provision_picks_the_fitting_type_and_check_the_compatible_ones():
    assert fields.fitting_type("address1_composite", None).type == "address"
    assert fields.fitting_type("birthdate", "DateTime").type == "birthday"
    assert fields.fitting_type("cbr_joined", "DateTime").date_format == "MM/DD/YYYY"
    assert fields.fitting_type("numberofemployees", "Integer").type == "number"
    assert fields.fitting_type("telephone1", "String").type == "phone"
    assert fields.fitting_type("firstname", "String").type == "text"
    assert fields.compatible(MergeDefinition("X", "text"), "firstname", "String")
    assert not fields.compatible(MergeDefinition("X", "number"), "firstname", "String")
    assert not fields.compatible(MergeDefinition("X", "text"), "address1_composite", None)


def test_definitions_round_trip_and_read_mailchimps_object():
    definition = MergeDefinition.of(
        {"tag": "JOINED", "type": "date", "required": True, "options": {"date_format": "DD/MM/YYYY"}}
    )
    assert definition == MergeDefinition("JOINED", "date", True, "DD/MM/YYYY")
    assert MergeDefinition.decode(definition.encode()) == definition
    assert MergeDefinition.of({"tag": "FNAME", "type": "text", "options": {"size": 25}}).size == 25


def test_a_digest_is_short_and_hides_the_value():
    assert len(fields.digest("Jane")) == fields.DIGEST_CHARS
    assert "Jane" not in fields.digest("Jane")
    assert fields.digest({"a": "1", "b": "2"}) == fields.digest({"b": "2", "a": "1"})


# ---- the merge -------------------------------------------------------------------------------------
def _decide(direction, m, d, base, *, m_at=T0, d_at=T0):
    base_digest = None if base is None else fields.digest(base)
    return merge(direction, Reading(m, True), Reading(d, True), base_digest, member_changed=m_at, records_changed=d_at)


def test_first_meeting_writes_dynamics_to_mailchimp_unless_the_field_flows_to_dynamics():
    assert _decide("to-mailchimp", "Old", "Jane", None).write_mailchimp
    assert _decide("both", "Old", "Jane", None).write_mailchimp
    assert _decide("to-dynamics", "Jane", "Old", None).write_dynamics
    agreed = _decide("both", "Jane", "Jane", None)
    assert not agreed.write_mailchimp and not agreed.write_dynamics and agreed.agreed == fields.digest("Jane")


def test_first_meeting_never_erases_a_value_with_an_empty_one():
    kept = _decide("to-mailchimp", "Jane", "", None)
    assert not kept.write_mailchimp and kept.rule == "field-first-meeting-kept"
    assert _decide("both", "Jane", "", None).write_dynamics  # both ways: the empty side takes the value
    assert not _decide("to-dynamics", "", "Jane", None).write_dynamics


def test_one_side_changed_wins_where_its_direction_allows():
    assert _decide("to-mailchimp", "Jane", "Janet", "Jane").write_mailchimp
    assert _decide("both", "Jane", "Janet", "Jane").write_mailchimp
    held = _decide("to-dynamics", "Jane", "Janet", "Jane")
    assert not held.write_mailchimp and not held.write_dynamics and held.rule == "field-direction-holds"
    assert _decide("both", "Janet", "Jane", "Jane").write_dynamics
    assert _decide("to-dynamics", "Janet", "Jane", "Jane").write_dynamics
    assert not _decide("to-mailchimp", "Janet", "Jane", "Jane").write_dynamics


def test_both_changed_the_later_wins_and_a_tie_keeps_dynamics():
    later_mailchimp = _decide("both", "Mc", "Dyn", "Base", m_at=T0 + timedelta(minutes=1), d_at=T0)
    assert later_mailchimp.write_dynamics and later_mailchimp.rule == "field-both-changed-mailchimp-later"
    later_dynamics = _decide("both", "Mc", "Dyn", "Base", m_at=T0, d_at=T0 + timedelta(minutes=1))
    assert later_dynamics.write_mailchimp and later_dynamics.rule == "field-both-changed-dynamics-later"
    tie = _decide("both", "Mc", "Dyn", "Base")
    assert tie.write_mailchimp
    assert _decide("both", "Same", "Same", "Base").rule == "field-agree"


def test_an_unread_side_is_taken_as_unchanged():
    base = fields.digest("Jane")
    only_dynamics = merge("both", Reading(), Reading("Janet", True), base, member_changed=None, records_changed=T0)
    assert only_dynamics.write_mailchimp
    assert merge("both", Reading(), Reading(), None, member_changed=None, records_changed=None).rule == "field-unread"


def test_the_most_recently_modified_active_record_speaks_for_the_person():
    records = [
        ("old", T0, True, {"firstname": "A"}),
        ("inactive", T0 + timedelta(days=2), False, {"firstname": "B"}),
        ("new", T0 + timedelta(days=1), True, {"firstname": "C"}),
        ("unread", T0 + timedelta(days=3), True, None),
    ]
    assert fields.speaking_record(records) == 2
    assert fields.speaking_record([("unread", T0, True, None)]) is None
    # after an agreement, a record that only echoes the sync's own write does not speak
    assert fields.speaking_record(records, since=T0 + timedelta(days=1)) is None
    assert fields.speaking_record(records, since=T0 + timedelta(hours=1)) == 2
    tied = [("b", T0, True, {}), ("a", T0, True, {})]
    assert fields.speaking_record(tied) == 0  # a tie is broken the same way every run


# ---- the property: any interleaving of edits, then two quiet runs ------------------------------------
EDITS = st.lists(st.tuples(st.sampled_from(["m", "d", "run"]), st.booleans()), max_size=14)


@settings(max_examples=300, deadline=None)
@given(direction=st.sampled_from(["to-mailchimp", "to-dynamics", "both"]), steps=EDITS)
def test_each_field_holds_its_later_edit_on_both_sides_where_its_direction_allows(direction, steps):
    clock = iter(T0 + timedelta(minutes=n) for n in range(1000))
    m_value, m_at = "m0", next(clock)
    d_value, d_at = "d0", next(clock)
    base: str | None = None

    def run() -> None:
        nonlocal m_value, m_at, d_value, d_at, base
        at = next(clock)
        decision = merge(
            direction,
            Reading(m_value, True),
            Reading(d_value, True),
            base,
            member_changed=m_at,
            records_changed=d_at,
        )
        if decision.write_mailchimp:
            m_value, m_at = d_value, at
        if decision.write_dynamics:
            d_value, d_at = m_value, at
        if decision.agreed is not None:
            base = decision.agreed

    run()  # the first meeting
    latest = {"to-mailchimp": d_value, "to-dynamics": m_value, "both": d_value}[direction]
    last_m, last_d = m_value, d_value
    for number, (side, _) in enumerate(steps):
        if side == "run":
            run()
            continue
        value = f"{side}{number + 1}"  # every edit is a new value
        if side == "m":
            m_value, m_at = value, next(clock)
            last_m = value
        else:
            d_value, d_at = value, next(clock)
            last_d = value
        latest = value
    run()
    run()
    if direction == "both":
        assert m_value == d_value == latest
    elif direction == "to-mailchimp":
        assert d_value == last_d  # Dynamics keeps its own; Mailchimp holds the later of the two sides' edits
        assert m_value == latest
    else:
        assert m_value == last_m
        assert d_value == latest
