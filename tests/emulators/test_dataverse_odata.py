"""The emulator's OData query language: $filter, $orderby, $select, sorting and date literals."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulators.dataverse.odata import (
    ODataError,
    parse_datetime,
    parse_filter,
    parse_orderby,
    parse_select,
    sort_key,
)

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
LIST_A = "aaaaaaaa-0000-0000-0000-00000000000a"
LIST_B = "bbbbbbbb-0000-0000-0000-00000000000b"
ACCOUNT = "1234abcd-0000-0000-0000-0000000000ac"


class Table:
    """A minimal EntityType: attribute types by logical name, collection-valued navigations."""

    def __init__(self, logical_name: str, attributes: dict[str, str], navigations: dict[str, Table] | None = None):
        self.logical_name = logical_name
        self.attributes = attributes
        self.navigations = navigations or {}

    def attribute_type(self, name: str) -> str | None:
        return self.attributes.get(name)

    def navigation(self, name: str) -> Table | None:
        return self.navigations.get(name)


class Context:
    """A minimal RowContext: related rows by (row id, navigation), a fixed clock, and a record of calls."""

    def __init__(self, related: dict[tuple[str, str], list[dict]] | None = None, now: datetime = NOW):
        self.links = related or {}
        self.clock = now
        self.asked: list[tuple[str, str]] = []

    def related(self, row: dict, navigation: Any) -> Iterable[dict]:
        row_id = row.get("contactid") or row.get("listid") or ""
        self.asked.append((row_id, navigation))
        return self.links.get((row_id, navigation), [])

    def now(self) -> datetime:
        return self.clock


CAMPAIGN = Table("campaign", {"campaignid": "Uniqueidentifier", "name": "String"})
LIST = Table(
    "list",
    {
        "listid": "Uniqueidentifier",
        "listname": "String",
        "type": "Boolean",
        "createdfromcode": "Picklist",
        "statecode": "State",
    },
    {"campaign_lists": CAMPAIGN},
)
CONTACT = Table(
    "contact",
    {
        "contactid": "Uniqueidentifier",
        "emailaddress1": "String",
        "firstname": "String",
        "lastname": "String",
        "description": "Memo",
        "donotbulkemail": "Boolean",
        "donotsendmm": "Boolean",
        "statecode": "State",
        "statuscode": "Status",
        "numberofchildren": "Integer",
        "versionnumber": "BigInt",
        "creditlimit": "Money",
        "modifiedon": "DateTime",
        "createdon": "DateTime",
        "parentcustomerid": "Customer",
        "_ownerid_value": "Owner",
        "ownerid": "Owner",
    },
    {"listcontact_association": LIST},
)


def contact(number: int, **values: Any) -> dict:
    return {"contactid": f"c{number}", **values}


ROWS = [
    contact(
        1,
        emailaddress1="Ann@Example.com",
        firstname="Ann",
        lastname="Lee",
        donotbulkemail=False,
        statecode=0,
        numberofchildren=2,
        versionnumber=10,
        creditlimit=1500,
        modifiedon=datetime(2024, 1, 1, tzinfo=UTC),
        _parentcustomerid_value=ACCOUNT.upper(),
    ),
    contact(
        2,
        emailaddress1="bob@example.org",
        firstname="Bob",
        lastname="Bob",
        donotbulkemail=True,
        statecode=1,
        numberofchildren=0,
        versionnumber=11,
        creditlimit=0,
        modifiedon=datetime(2024, 6, 15, 9, 30, tzinfo=UTC),
    ),
    contact(
        3,
        emailaddress1="o'brian@example.com",
        firstname="Zoë",
        lastname="O'Brian",
        donotbulkemail=None,
        statecode=0,
        numberofchildren=None,
        versionnumber=12,
        modifiedon="2024-03-10T08:00:00Z",
    ),
    contact(
        4,
        emailaddress1=None,
        firstname=None,
        lastname="Null",
        donotbulkemail=False,
        statecode=0,
        numberofchildren=5,
        versionnumber=13,
        modifiedon=datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC),
    ),
    contact(
        5,
        emailaddress1="jane+news@example.com",
        firstname="jane  ",
        lastname="Smith_Jones",
        donotbulkemail=True,
        statecode=0,
        numberofchildren=1,
        versionnumber=14,
        modifiedon=datetime(2024, 6, 14, 0, 0, tzinfo=timezone(timedelta(hours=2))),
    ),
]
MEMBERSHIP = {
    ("c1", "listcontact_association"): [{"listid": LIST_A, "listname": "Newsletter", "type": False, "statecode": 0}],
    ("c2", "listcontact_association"): [
        {"listid": LIST_A, "listname": "Newsletter", "type": False, "statecode": 0},
        {"listid": LIST_B.upper(), "listname": "Events", "type": True, "statecode": 1},
    ],
    ("c3", "listcontact_association"): [{"listid": LIST_B, "listname": "Events", "type": True, "statecode": 1}],
    (LIST_A, "campaign_lists"): [{"campaignid": "k1", "name": "Spring"}],
}


def matching(text: str, rows: list[dict] = ROWS, ctx: Context | None = None, **options: Any) -> list[str]:
    predicate = parse_filter(text, CONTACT, **options)
    context = ctx or Context(MEMBERSHIP)
    return [row["contactid"] for row in rows if predicate(row, context)]


def error_of(text: str) -> ODataError:
    with pytest.raises(ODataError) as caught:
        parse_filter(text, CONTACT)
    assert caught.value.status == 400
    return caught.value


# ---------------------------------------------------------------------------------------------
# Comparisons and literals
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("emailaddress1 eq 'ann@example.com'", ["c1"]),
        ("emailaddress1 eq 'ANN@EXAMPLE.COM'", ["c1"]),
        ("emailaddress1 ne 'ann@example.com'", ["c2", "c3", "c5"]),
        ("lastname gt 'n'", ["c3", "c4", "c5"]),
        ("lastname ge 'null'", ["c3", "c4", "c5"]),
        ("lastname lt 'LEE'", ["c2"]),
        ("lastname le 'lee'", ["c1", "c2"]),
        ("statecode eq 0", ["c1", "c3", "c4", "c5"]),
        ("statecode ne 0", ["c2"]),
        ("numberofchildren gt 1", ["c1", "c4"]),
        ("numberofchildren ge 1", ["c1", "c4", "c5"]),
        ("numberofchildren lt 1", ["c2"]),
        ("numberofchildren le 1", ["c2", "c5"]),
        ("versionnumber ge 3000000000 or versionnumber eq 12", ["c3"]),
        ("creditlimit gt 999.5", ["c1"]),
        ("creditlimit lt 1.5e3", ["c2"]),
        ("donotbulkemail eq true", ["c2", "c5"]),
        ("donotbulkemail eq false", ["c1", "c4"]),
        ("donotbulkemail ne true", ["c1", "c4"]),
        ("donotbulkemail", ["c2", "c5"]),
        ("not donotbulkemail", ["c1", "c4"]),
        ("true", ["c1", "c2", "c3", "c4", "c5"]),
        ("false", []),
    ],
)
def test_comparison_operators_on_every_column_type(text: str, expected: list[str]) -> None:
    assert matching(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("modifiedon ge 2024-06-01T00:00:00Z", ["c2", "c5"]),
        ("modifiedon gt 2024-06-15T09:30:00Z", []),
        ("modifiedon ge 2024-06-15T09:30:00Z", ["c2"]),
        ("modifiedon ge 2024-06-15T11:30:00+02:00", ["c2"]),
        ("modifiedon lt 2024-01-01T00:00:00.5Z", ["c1", "c4"]),
        ("modifiedon eq 2024-03-10T08:00:00Z", ["c3"]),
        ("modifiedon eq 2024-06-13T22:00:00Z", ["c5"]),
        ("modifiedon lt 2024-01-01", ["c4"]),
        ("modifiedon ge 2024-01-01 and modifiedon le 2024-01-01", ["c1"]),
        ("modifiedon eq null", []),
    ],
)
def test_datetime_literals_with_offsets_fractions_and_dates(text: str, expected: list[str]) -> None:
    assert matching(text) == expected


def test_text_ignores_case_accents_and_trailing_spaces_like_the_sql_collation() -> None:
    assert matching("firstname eq 'ZOE'") == ["c3"]
    assert matching("firstname eq 'zoë'") == ["c3"]
    assert matching("firstname eq 'Jane'") == ["c5"]
    assert matching("firstname eq 'jane  '") == ["c5"]
    assert matching("firstname eq ' jane'") == []


def test_quotes_in_literals_are_doubled() -> None:
    assert matching("lastname eq 'O''Brian'") == ["c3"]
    assert matching("emailaddress1 eq 'o''brian@example.com'") == ["c3"]
    assert matching("lastname eq ''''") == []


def test_comparing_two_columns_of_one_row() -> None:
    assert matching("firstname eq lastname") == ["c2"]
    assert matching("firstname ne lastname") == ["c1", "c3", "c5"]
    error = error_of("firstname eq statecode")
    assert "'Edm.String' and 'Edm.Int32'" in error.message


def test_literal_on_the_left_is_mirrored() -> None:
    assert matching("1 lt numberofchildren") == matching("numberofchildren gt 1") == ["c1", "c4"]
    assert matching("'bob@example.org' eq emailaddress1") == ["c2"]


def test_lookups_are_filtered_by_their_value_property_with_bare_or_quoted_guids() -> None:
    assert matching(f"_parentcustomerid_value eq {ACCOUNT}") == ["c1"]
    assert matching(f"_parentcustomerid_value eq '{ACCOUNT.upper()}'") == ["c1"]
    assert matching("_parentcustomerid_value eq null") == ["c2", "c3", "c4", "c5"]
    assert matching(f"_parentcustomerid_value ne {ACCOUNT}") == []
    assert matching("_ownerid_value eq null") == ["c1", "c2", "c3", "c4", "c5"]
    error = error_of("parentcustomerid eq null")
    assert error.message == (
        "Could not find a property named 'parentcustomerid' on type 'Microsoft.Dynamics.CRM.contact'."
    )


def test_nulls_are_unknown_so_ne_and_not_skip_them() -> None:
    assert matching("emailaddress1 eq null") == ["c4"]
    assert matching("emailaddress1 ne null") == ["c1", "c2", "c3", "c5"]
    assert matching("null eq emailaddress1") == ["c4"]
    assert matching("numberofchildren ne 2") == ["c2", "c4", "c5"]
    assert matching("not (numberofchildren eq 2)") == ["c2", "c4", "c5"]
    assert matching("numberofchildren gt null") == []
    assert matching("not (donotbulkemail eq true)") == ["c1", "c4"]
    # unknown or true is true, unknown and false is false, so not(...) of it is decided
    assert matching("numberofchildren eq 2 or statecode eq 0") == ["c1", "c3", "c4", "c5"]
    assert matching("not (numberofchildren eq 9 and statecode eq 1)") == ["c1", "c2", "c3", "c4", "c5"]


# ---------------------------------------------------------------------------------------------
# Logic and precedence
# ---------------------------------------------------------------------------------------------


def test_and_binds_tighter_than_or_and_parentheses_regroup() -> None:
    assert matching("statecode eq 1 or statecode eq 0 and donotbulkemail eq true") == ["c2", "c5"]
    assert matching("(statecode eq 1 or statecode eq 0) and donotbulkemail eq true") == ["c2", "c5"]
    assert matching("statecode eq 1 or (statecode eq 0 and donotbulkemail eq false)") == ["c1", "c2", "c4"]
    assert matching("(statecode eq 1 or statecode eq 0) and donotbulkemail eq false") == ["c1", "c4"]
    assert matching("((((statecode eq 1))))") == ["c2"]
    assert matching("not (statecode eq 1 or donotbulkemail eq false)") == ["c5"]
    assert matching("not not donotbulkemail") == ["c2", "c5"]


def test_not_binds_to_the_next_operand_as_in_odata() -> None:
    error = error_of("not emailaddress1 eq 'ann@example.com'")
    assert error.message == (
        "A unary operator with an incompatible type was detected. Found operand type "
        "'Edm.String' for operator kind 'Not'."
    )
    assert matching("not (emailaddress1 eq 'ann@example.com')") == ["c2", "c3", "c5"]


def test_boolean_expressions_compared_with_true_or_false() -> None:
    assert matching("contains(emailaddress1,'example.com') eq true") == ["c1", "c3", "c5"]
    assert matching("contains(emailaddress1,'example.com') eq false") == ["c2"]
    assert matching("contains(emailaddress1,'example.com') ne true") == ["c2"]


def test_keywords_are_case_sensitive() -> None:
    error = error_of("statecode EQ 0")
    assert error.message == "Syntax error at position 10 in 'statecode EQ 0'."


# ---------------------------------------------------------------------------------------------
# String functions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contains(emailaddress1,'EXAMPLE')", ["c1", "c2", "c3", "c5"]),
        ("contains(emailaddress1,'+news')", ["c5"]),
        ("startswith(emailaddress1,'ann')", ["c1"]),
        ("endswith(emailaddress1,'.ORG')", ["c2"]),
        ("endswith(firstname,'e')", ["c3", "c5"]),
        ("not contains(emailaddress1,'example.com')", ["c2"]),
        ("contains(lastname,'h_j')", ["c5"]),
        ("contains(lastname,'h[_]j')", ["c5"]),
        ("contains(lastname,'h[^_]j')", []),
        ("startswith(lastname,'[a-m]')", ["c1", "c2"]),
        ("startswith(lastname,'%ee')", ["c1"]),
        ("contains(description,'x')", []),
        ("contains(emailaddress1,null)", []),
    ],
)
def test_contains_startswith_endswith_are_like_with_wildcards(text: str, expected: list[str]) -> None:
    assert matching(text) == expected


def test_string_functions_need_a_text_column_and_a_text_literal() -> None:
    error = error_of("contains(statecode,'1')")
    assert error.message.startswith("No function signature for the function with name 'contains'")
    assert error_of("contains('abc',emailaddress1)").status == 400
    assert error_of("startswith(emailaddress1,lastname)").status == 400
    assert error_of("endswith(emailaddress1,1)").message.startswith("No function signature")


# ---------------------------------------------------------------------------------------------
# Lambdas over collection-valued navigation properties
# ---------------------------------------------------------------------------------------------


def test_any_over_list_membership_the_way_the_product_asks() -> None:
    assert matching(f"listcontact_association/any(l:l/listid eq {LIST_A})") == ["c1", "c2"]
    assert matching(f"listcontact_association/any(l:l/listid eq {LIST_B})") == ["c2", "c3"]
    assert matching(f"listcontact_association/any(l:l/listid eq '{LIST_B}')") == ["c2", "c3"]
    ctx = Context(MEMBERSHIP)
    matching(f"listcontact_association/any(l:l/listid eq {LIST_A})", ctx=ctx)
    assert ctx.asked[0] == ("c1", "listcontact_association")


def test_any_all_and_empty_any() -> None:
    assert matching("listcontact_association/any()") == ["c1", "c2", "c3"]
    assert matching("not listcontact_association/any()") == ["c4", "c5"]
    # all() is true for contacts on no list at all
    assert matching("listcontact_association/all(l:l/type eq true)") == ["c3", "c4", "c5"]
    assert matching("listcontact_association/all(l:l/statecode eq 0)") == ["c1", "c4", "c5"]
    assert matching("listcontact_association/any(l:l/type eq true and l/statecode eq 1) and statecode eq 0") == ["c3"]


def test_lambda_bodies_see_the_outer_row_and_nest() -> None:
    assert matching("listcontact_association/any(l:l/listname eq 'events' and donotbulkemail eq true)") == ["c2"]
    assert matching("listcontact_association/any(l:l/campaign_lists/any(k:k/name eq 'spring'))") == ["c1", "c2"]
    assert matching(
        "listcontact_association/any(l:l/campaign_lists/any(k:l/listname eq 'newsletter' and contains(k/name,'ring')))"
    ) == ["c1", "c2"]


def test_lambda_errors() -> None:
    assert error_of("listcontact_association/any(l:l/nope eq 1)").message == (
        "Could not find a property named 'nope' on type 'Microsoft.Dynamics.CRM.list'."
    )
    assert error_of("listcontact_association/any(l:listid eq 1)").message == (
        "Could not find a property named 'listid' on type 'Microsoft.Dynamics.CRM.contact'."
    )
    assert error_of(f"listcontact_association/listid eq {LIST_A}").message == (
        "The parent value for a property access of a property 'listid' is not a single value. Property access can "
        "only be applied to a single value."
    )
    assert error_of("nolists/any(l:l/listid eq 1)").message == (
        "Could not find a property named 'nolists' on type 'Microsoft.Dynamics.CRM.contact'."
    )
    assert error_of("listcontact_association/any(l:l/listname)").status == 400
    assert error_of("listcontact_association/any(l:l/type eq true").message.startswith("')' or operator expected")
    assert error_of("listcontact_association/all()").message.startswith("Syntax error at position")
    assert (
        "already been declared"
        in error_of("listcontact_association/any(l:l/campaign_lists/any(l:l/name eq 'x'))").message
    )


# ---------------------------------------------------------------------------------------------
# Dataverse query functions
# ---------------------------------------------------------------------------------------------


def test_in_and_not_in_with_single_or_double_quoted_values() -> None:
    assert matching(
        "Microsoft.Dynamics.CRM.In(PropertyName='emailaddress1',PropertyValues=['ANN@example.com','bob@example.org'])"
    ) == ["c1", "c2"]
    assert matching('Microsoft.Dynamics.CRM.In(PropertyName=\'lastname\',PropertyValues=["O\'Brian","Lee"])') == [
        "c1",
        "c3",
    ]
    assert matching(
        "Microsoft.Dynamics.CRM.NotIn(PropertyName='emailaddress1',PropertyValues=['ann@example.com'])"
    ) == ["c2", "c3", "c5"]
    assert matching("Microsoft.Dynamics.CRM.In(PropertyName='statecode',PropertyValues=['1'])") == ["c2"]
    assert matching("Microsoft.Dynamics.CRM.In(PropertyName='numberofchildren',PropertyValues=[0,5])") == ["c2", "c4"]
    assert matching(f"Microsoft.Dynamics.CRM.In(PropertyName='parentcustomerid',PropertyValues=['{ACCOUNT}'])") == [
        "c1"
    ]
    assert matching(
        f"Microsoft.Dynamics.CRM.In(PropertyName='_parentcustomerid_value',PropertyValues=['{{{ACCOUNT}}}'])"
    ) == ["c1"]
    assert matching("not Microsoft.Dynamics.CRM.In(PropertyName='statecode',PropertyValues=['0'])") == ["c2"]


def test_in_with_parameter_aliases() -> None:
    text = "Microsoft.Dynamics.CRM.In(PropertyName=@p1,PropertyValues=@p2)"
    aliases = {"@p1": "'lastname'", "@p2": '["OBrian","O\'Brian","Lee"]'}
    assert matching(text, aliases=aliases) == ["c1", "c3"]
    assert matching("@p1 eq @p2", aliases={"p1": "statecode", "p2": "1"}) == ["c2"]
    assert matching("emailaddress1 eq @missing") == ["c4"]


def test_between_and_day_functions() -> None:
    assert matching('Microsoft.Dynamics.CRM.Between(PropertyName=\'numberofchildren\',PropertyValues=["1","2"])') == [
        "c1",
        "c5",
    ]
    assert matching("Microsoft.Dynamics.CRM.NotBetween(PropertyName='numberofchildren',PropertyValues=['1','2'])") == [
        "c2",
        "c4",
    ]
    assert matching("Microsoft.Dynamics.CRM.OnOrAfter(PropertyName='modifiedon',PropertyValue='2024-03-10')") == [
        "c2",
        "c3",
        "c5",
    ]
    assert matching("Microsoft.Dynamics.CRM.OnOrBefore(PropertyName='modifiedon',PropertyValue='2024-01-01')") == [
        "c1",
        "c4",
    ]
    assert matching("Microsoft.Dynamics.CRM.On(PropertyName='modifiedon',PropertyValue='2024-06-13')") == ["c5"]
    assert matching(
        "Microsoft.Dynamics.CRM.OnOrAfter(PropertyName='modifiedon',PropertyValue='2024-06-15T23:59:00Z')"
    ) == ["c2"]


def test_relative_date_functions_read_the_context_clock() -> None:
    assert matching("Microsoft.Dynamics.CRM.LastXHours(PropertyName='modifiedon',PropertyValue=3)") == ["c2"]
    assert matching("Microsoft.Dynamics.CRM.LastXDays(PropertyName='modifiedon',PropertyValue=1)") == ["c2"]
    assert matching("Microsoft.Dynamics.CRM.LastXDays(PropertyName='modifiedon',PropertyValue='2')") == ["c2", "c5"]
    assert matching("Microsoft.Dynamics.CRM.Last7Days(PropertyName='modifiedon')") == ["c2", "c5"]
    assert matching("Microsoft.Dynamics.CRM.Today(PropertyName='modifiedon')") == ["c2"]
    assert matching("Microsoft.Dynamics.CRM.Yesterday(PropertyName='modifiedon')") == []
    assert matching("Microsoft.Dynamics.CRM.OlderThanXDays(PropertyName='modifiedon',PropertyValue=100)") == [
        "c1",
        "c4",
    ]
    later = Context(MEMBERSHIP, now=NOW + timedelta(days=1))
    assert matching("Microsoft.Dynamics.CRM.Yesterday(PropertyName='modifiedon')", ctx=later) == ["c2"]
    assert matching("Microsoft.Dynamics.CRM.LastXHours(PropertyName='modifiedon',PropertyValue=3)", ctx=later) == []


def test_dataverse_function_errors() -> None:
    error = error_of("Microsoft.Dynamics.CRM.In(PropertyName='nope',PropertyValues=['a'])")
    assert error.code == "0x80041103"
    assert error.message == "'contact' entity doesn't contain attribute with Name = 'nope' and NameMapping = 'Logical'."
    assert error_of("Microsoft.Dynamics.CRM.EqualUserId(PropertyName='ownerid')").message == (
        "The function 'Microsoft.Dynamics.CRM.EqualUserId' is not supported."
    )
    assert error_of("Microsoft.Dynamics.CRM.Nope(PropertyName='ownerid')").message.startswith(
        "An unknown function with name 'Microsoft.Dynamics.CRM.Nope' was found."
    )
    assert "non-empty list" in error_of("Microsoft.Dynamics.CRM.In(PropertyName='statecode',PropertyValues=[])").message
    assert (
        "not valid for 'statecode'"
        in error_of("Microsoft.Dynamics.CRM.In(PropertyName='statecode',PropertyValues=['active'])").message
    )
    assert (
        "date and time"
        in error_of("Microsoft.Dynamics.CRM.OnOrAfter(PropertyName='statecode',PropertyValue='2024-01-01')").message
    )
    assert (
        "whole number"
        in error_of("Microsoft.Dynamics.CRM.LastXDays(PropertyName='modifiedon',PropertyValue='many')").message
    )
    assert (
        "exactly two"
        in error_of("Microsoft.Dynamics.CRM.Between(PropertyName='statecode',PropertyValues=['1'])").message
    )
    assert (
        "twice"
        in error_of(
            "Microsoft.Dynamics.CRM.In(PropertyName='statecode',PropertyName='statecode',PropertyValues=['1'])"
        ).message
    )


# ---------------------------------------------------------------------------------------------
# Errors with the real service's wording
# ---------------------------------------------------------------------------------------------


def test_unknown_property_has_the_real_code_and_message() -> None:
    error = error_of("foo eq 1")
    assert (error.status, error.code) == (400, "0x80060888")
    assert error.message == "Could not find a property named 'foo' on type 'Microsoft.Dynamics.CRM.contact'."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lastname eq 'O'Bryan'", "There is an unterminated literal at position 21 in 'lastname eq 'O'Bryan''."),
        ("emailaddress1 eq", "Expression expected at position 16 in 'emailaddress1 eq'."),
        ("emailaddress1 eq 'a' and", "Expression expected at position 24 in 'emailaddress1 eq 'a' and'."),
        ("(statecode eq 0", "')' or operator expected at position 15 in '(statecode eq 0'."),
        ("statecode eq 0)", "Syntax error at position 14 in 'statecode eq 0)'."),
        ("statecode eq 0 statecode", "Syntax error at position 15 in 'statecode eq 0 statecode'."),
        ("statecode eq #", "Syntax error: character '#' is not valid at position 13 in 'statecode eq #'."),
        ("", "Expression expected at position 0 in ''."),
        (
            "modifiedon ge 2024-01-01T00:00:00",
            "Unrecognized 'Edm.DateTimeOffset' literal '2024-01-01T00:00:00' at '14' in "
            "'modifiedon ge 2024-01-01T00:00:00'.",
        ),
        (
            "modifiedon ge 2024-13-01T00:00:00Z",
            "Unrecognized 'Edm.DateTimeOffset' literal '2024-13-01T00:00:00Z' at '14' in "
            "'modifiedon ge 2024-13-01T00:00:00Z'.",
        ),
        ("emailaddress1", "The $filter expression must evaluate to a single boolean value."),
    ],
)
def test_syntax_errors_point_at_the_position(text: str, message: str) -> None:
    error = error_of(text)
    assert (error.code, error.message) == ("0x80060888", message)


@pytest.mark.parametrize(
    ("text", "left", "right", "kind"),
    [
        ("emailaddress1 eq 1", "Edm.String", "Edm.Int32", "Equal"),
        ("statecode eq '1'", "Edm.Int32", "Edm.String", "Equal"),
        ("modifiedon ge '2024-01-01'", "Edm.DateTimeOffset", "Edm.String", "GreaterThanOrEqual"),
        ("donotbulkemail eq 1", "Edm.Boolean", "Edm.Int32", "Equal"),
        ("_parentcustomerid_value eq 'not-a-guid'", "Edm.Guid", "Edm.String", "Equal"),
        ("versionnumber lt true", "Edm.Int64", "Edm.Boolean", "LessThan"),
        ("'x' lt numberofchildren", "Edm.String", "Edm.Int32", "LessThan"),
        ("emailaddress1 and statecode eq 0", "Edm.String", "Edm.Boolean", "And"),
        ("statecode eq 0 or firstname", "Edm.Boolean", "Edm.String", "Or"),
    ],
)
def test_incompatible_operand_types(text: str, left: str, right: str, kind: str) -> None:
    assert error_of(text).message == (
        "A binary operator with incompatible types was detected. Found operand types "
        f"'{left}' and '{right}' for operator kind '{kind}'."
    )


@pytest.mark.parametrize(
    "text",
    [
        "tolower(emailaddress1) eq 'a'",
        "toupper(lastname) eq 'A'",
        "length(lastname) gt 1",
        "substring(lastname,1) eq 'a'",
        "year(modifiedon) eq 2024",
        "trim(lastname) eq 'a'",
    ],
)
def test_unsupported_functions_are_refused(text: str) -> None:
    error = error_of(text)
    assert error.message.endswith("is not supported.")
    assert text.split("(")[0] in error.message


def test_unknown_functions_operators_and_literal_comparisons_are_refused() -> None:
    assert error_of("frobnicate(lastname)").message == (
        "An unknown function with name 'frobnicate' was found. This may also be a function import or a key lookup "
        "on a navigation property, which is not allowed."
    )
    assert error_of("numberofchildren add 1 eq 2").message == "The operator 'add' is not supported."
    assert error_of("lastname in ('a','b')").message == "The operator 'in' is not supported."
    assert error_of("1 eq 1").status == 400
    assert error_of("donotbulkemail gt true and contains(lastname,'a') gt true").status == 400


# ---------------------------------------------------------------------------------------------
# $orderby, $select, sort_key, parse_datetime
# ---------------------------------------------------------------------------------------------


def test_parse_orderby() -> None:
    assert parse_orderby("modifiedon desc,lastname", CONTACT) == [("modifiedon", True), ("lastname", False)]
    assert parse_orderby(" lastname asc , _parentcustomerid_value desc ", CONTACT) == [
        ("lastname", False),
        ("_parentcustomerid_value", True),
    ]
    assert parse_orderby("@p1 desc", CONTACT, aliases={"@p1": "createdon"}) == [("createdon", True)]
    with pytest.raises(ODataError) as unknown:
        parse_orderby("lastname,nope desc", CONTACT)
    assert unknown.value.message == "Could not find a property named 'nope' on type 'Microsoft.Dynamics.CRM.contact'."
    with pytest.raises(ODataError) as direction:
        parse_orderby("lastname down", CONTACT)
    assert direction.value.message == "Syntax error at position 9 in 'lastname down'."
    with pytest.raises(ODataError) as empty:
        parse_orderby("lastname,,firstname", CONTACT)
    assert empty.value.message == "Expression expected at position 9 in 'lastname,,firstname'."
    with pytest.raises(ODataError):
        parse_orderby("listcontact_association/listname", CONTACT)


def test_parse_select() -> None:
    assert parse_select("emailaddress1,_parentcustomerid_value,emailaddress1,donotbulkemail", CONTACT) == [
        "emailaddress1",
        "_parentcustomerid_value",
        "donotbulkemail",
    ]
    assert parse_select("  ", CONTACT) == []
    for bad, name in (
        ("emailaddress1,Name", "Name"),
        ("parentcustomerid", "parentcustomerid"),
        ("listcontact_association", "listcontact_association"),
    ):
        with pytest.raises(ODataError) as caught:
            parse_select(bad, CONTACT)
        assert caught.value.code == "0x80060888"
        assert caught.value.message == (
            f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.contact'."
        )
    with pytest.raises(ODataError):
        parse_select("emailaddress1 desc", CONTACT)
    with pytest.raises(ODataError):
        parse_select("*", CONTACT)


def test_sort_key_is_null_safe_case_insensitive_and_mixes_directions() -> None:
    rows = [
        {"id": 1, "name": "bob", "n": 2},
        {"id": 2, "name": None, "n": 1},
        {"id": 3, "name": "Ann", "n": 1},
        {"id": 4, "name": "ann", "n": 3},
        {"id": 5, "name": "Émile", "n": None},
    ]
    ids = [row["id"] for row in sorted(rows, key=sort_key([("name", False), ("n", True)]))]
    assert ids == [2, 4, 3, 1, 5]
    ids = [row["id"] for row in sorted(rows, key=sort_key([("name", True), ("n", False)]))]
    assert ids == [5, 1, 3, 4, 2]
    ids = [row["id"] for row in sorted(rows, key=sort_key([("n", False)]))]
    assert ids == [5, 2, 3, 1, 4]
    assert [row["contactid"] for row in sorted(ROWS, key=sort_key(parse_orderby("modifiedon desc", CONTACT)))] == [
        "c2",
        "c5",
        "c3",
        "c1",
        "c4",
    ]
    assert [
        row["contactid"] for row in sorted(ROWS, key=sort_key([("donotbulkemail", False), ("lastname", True)]))
    ] == ["c3", "c4", "c1", "c5", "c2"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T02:30:00+02:30", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T00:00:00.1234567Z", datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
        ("2024-01-01T00:00:00", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01", datetime(2024, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_datetime(text: str, expected: datetime) -> None:
    parsed = parse_datetime(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["yesterday", "2024-02-30", "2024-01-01T25:00:00Z", ""])
def test_parse_datetime_refuses_nonsense(text: str) -> None:
    with pytest.raises(ODataError) as caught:
        parse_datetime(text)
    assert caught.value.status == 400


# ---------------------------------------------------------------------------------------------
# Properties: random filters against a straightforward reference evaluation
# ---------------------------------------------------------------------------------------------

PEOPLE = Table("contact", {"contactid": "Uniqueidentifier", "name": "String", "age": "Integer", "active": "Boolean"})
NAMES = [None, "ann", "Ann", "bob", "ZED", "o'neil"]
AGES = [None, 0, 1, 5]
PEOPLE_ROWS = [
    {"contactid": f"p{i}", "name": name, "age": age, "active": active}
    for i, (name, age, active) in enumerate((n, a, b) for n in NAMES for a in AGES for b in (None, True, False))
]
OPS = ["eq", "ne", "gt", "ge", "lt", "le"]

comparisons = st.one_of(
    st.tuples(st.just("name"), st.sampled_from(OPS), st.sampled_from(NAMES)),
    st.tuples(st.just("age"), st.sampled_from(OPS), st.sampled_from(AGES)),
    st.tuples(st.just("active"), st.sampled_from(["eq", "ne"]), st.sampled_from([None, True, False])),
    st.tuples(
        st.sampled_from(["contains", "startswith", "endswith"]),
        st.just("name"),
        st.sampled_from(["a", "AN", "n", "z", "'", "o'n"]),
    ),
)
expressions = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.tuples(st.just("not"), inner),
        st.tuples(st.sampled_from(["and", "or"]), inner, inner),
    ),
    max_leaves=8,
)


def literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def render(expression: tuple, parent: str = "") -> str:
    head = expression[0]
    if head == "not":
        return f"not ({render(expression[1])})"
    if head in ("and", "or"):
        text = f"{render(expression[1], head)} {head} {render(expression[2], head)}"
        # an 'and' under an 'or' needs no parentheses: that exercises precedence
        return text if head == "and" and parent == "or" else f"({text})"
    if head in ("contains", "startswith", "endswith"):
        return f"{head}({expression[1]},{literal(expression[2])})"
    return f"{head} {expression[1]} {literal(expression[2])}"


def reference(expression: tuple, row: dict) -> bool | None:
    """Kleene three-valued logic with SQL comparisons, written independently of the engine."""
    head = expression[0]
    if head == "not":
        inner = reference(expression[1], row)
        return None if inner is None else not inner
    if head == "and":
        a, b = reference(expression[1], row), reference(expression[2], row)
        if a is False or b is False:
            return False
        return None if a is None or b is None else True
    if head == "or":
        a, b = reference(expression[1], row), reference(expression[2], row)
        if a is True or b is True:
            return True
        return None if a is None or b is None else False
    if head in ("contains", "startswith", "endswith"):
        value = row[expression[1]]
        if value is None:
            return None
        haystack, needle = value.lower(), expression[2].lower()
        return {
            "contains": needle in haystack,
            "startswith": haystack.startswith(needle),
            "endswith": haystack.endswith(needle),
        }[head]
    column, op, constant = expression
    value = row[column]
    if constant is None:
        return {"eq": value is None, "ne": value is not None}.get(op)
    if value is None:
        return None
    if isinstance(value, str):
        value, constant = value.lower(), constant.lower()
    return {
        "eq": value == constant,
        "ne": value != constant,
        "gt": value > constant,
        "ge": value >= constant,
        "lt": value < constant,
        "le": value <= constant,
    }[op]


@settings(max_examples=200, deadline=None)
@given(expressions)
def test_random_filters_agree_with_a_reference_evaluation(expression: tuple) -> None:
    text = render(expression)
    predicate = parse_filter(text, PEOPLE)
    ctx = Context()
    got = [row["contactid"] for row in PEOPLE_ROWS if predicate(row, ctx)]
    expected = [row["contactid"] for row in PEOPLE_ROWS if reference(expression, row) is True]
    assert got == expected, text


@settings(max_examples=150, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))
def test_any_text_round_trips_through_a_quoted_literal(value: str) -> None:
    predicate = parse_filter(f"name eq {literal(value)}", PEOPLE)
    assert predicate({"name": value}, Context())
    ascii_value = value.encode("ascii", "ignore").decode()
    assert parse_filter(f"name eq {literal(ascii_value.upper())}", PEOPLE)({"name": ascii_value}, Context())


# ---------------------------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------------------------


def test_a_compiled_filter_scans_100000_rows_quickly() -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        {
            "contactid": f"{i:08x}-0000-0000-0000-000000000000",
            "emailaddress1": f"user{i}@example.com",
            "donotbulkemail": i % 3 == 0,
            "statecode": i % 2,
            "modifiedon": base + timedelta(minutes=i),
        }
        for i in range(100_000)
    ]
    ctx = Context()
    filters = {
        "three conditions": "donotbulkemail eq false and statecode eq 0 and modifiedon ge 2024-02-01T00:00:00Z",
        "text functions": "contains(emailaddress1,'99') or startswith(emailaddress1,'USER1')",
        "In": "Microsoft.Dynamics.CRM.In(PropertyName='emailaddress1',PropertyValues=['user5@example.com',"
        "'user7@example.com'])",
    }
    counts = {}
    for label, text in filters.items():
        predicate = parse_filter(text, CONTACT)
        started = time.perf_counter()
        counts[label] = sum(1 for row in rows if predicate(row, ctx))
        print(f"$filter {label}: {counts[label]} of 100,000 rows in {(time.perf_counter() - started) * 1000:.0f} ms")
    expected_three = sum(1 for i in range(100_000) if i % 3 and i % 2 == 0 and i >= 31 * 24 * 60)
    assert counts == {"three conditions": expected_three, "text functions": counts["text functions"], "In": 2}
    assert counts["text functions"] == sum(1 for i in range(100_000) if "99" in f"user{i}@" or str(i).startswith("1"))
