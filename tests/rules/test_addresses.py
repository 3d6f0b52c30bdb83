"""Addresses as Mailchimp keys them: normalised, hashed, and kept out of any text the product writes."""

from __future__ import annotations

import hashlib

import pytest

from shared.rules.addresses import email_problem, is_member_hash, member_hash, normalize_email, redact_emails


# Email validation.
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("person@example.com", "person@example.com"),
        ("  Person@Example.COM \n", "person@example.com"),
        ("First.Last+Tag@Sub.Example.co.uk", "first.last+tag@sub.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("x" * 64 + "@example.com", "x" * 64 + "@example.com"),
        ("name@xn--bcher-kva.example", "name@xn--bcher-kva.example"),
        ("name@example.xn--p1ai", "name@example.xn--p1ai"),
        (None, None),
        ("", None),
        ("   ", None),
        ("person.example.com", None),
        ("person@@example.com", None),
        ("a@b@example.com", None),
        ("person@localhost", None),
        ("person@example.c", None),
        ("person@example.123", None),
        (".person@example.com", None),
        ("person.@example.com", None),
        ("per..son@example.com", None),
        ("per son@example.com", None),
        ("person@-example.com", None),
        ("person@example-.com", None),
        ("person@example..com", None),
        ('"quoted"@example.com', None),
        ("person@[192.0.2.1]", None),
        ("jöe@example.com", None),
        ("x" * 65 + "@example.com", None),
        ("person@" + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 60 + ".com", None),
    ],
)
def test_normalize_email(raw: str | None, expected: str | None) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (None, "missing-email"),
        ("", "missing-email"),
        (" \t ", "missing-email"),
        ("person", "invalid-email"),
        ("person@example", "invalid-email"),
        ("PERSON+news@Example.com", None),
    ],
)
def test_email_problem(raw: str | None, problem: str | None) -> None:
    assert email_problem(raw) == problem


def test_member_hash_is_md5_of_the_trimmed_lower_cased_address() -> None:
    assert member_hash("  Person+News@Example.COM ") == hashlib.md5(b"person+news@example.com").hexdigest()
    assert member_hash("person+news@example.com") != member_hash("person@example.com")


@pytest.mark.parametrize(
    "address", ["person+news@example.com", "  Person+News@Example.COM\t", "PERSON+NEWS@EXAMPLE.COM", "x@b.example.org"]
)
def test_member_hash_equals_mailchimps_subscriber_hash(address: str) -> None:
    # Mailchimp's subscriber_hash: md5 of the lower-cased address, after trimming
    expected = hashlib.md5(address.strip().lower().encode("utf-8")).hexdigest()

    assert member_hash(address) == expected
    assert is_member_hash(member_hash(address))


def test_the_same_person_hashes_alike_however_the_address_is_spelled() -> None:
    spellings = ["ann.lee@example.com", " Ann.Lee@Example.com ", "ANN.LEE@EXAMPLE.COM\n"]

    assert len({member_hash(spelling) for spelling in spellings}) == 1
    assert {normalize_email(spelling) for spelling in spellings} == {"ann.lee@example.com"}


def test_a_refused_address_still_has_a_hash_to_name_it_by() -> None:
    assert normalize_email("two@@example.org") is None
    assert is_member_hash(member_hash("two@@example.org"))


@pytest.mark.parametrize(
    ("text", "hash_"),
    [
        ("0123456789abcdef0123456789abcdef", True),
        ("0123456789ABCDEF0123456789ABCDEF", False),
        ("0123456789abcdef0123456789abcde", False),
        ("0123456789abcdef0123456789abcdef0", False),
        ("z" * 32, False),
        ("person@example.com", False),
    ],
)
def test_is_member_hash(text: str, hash_: bool) -> None:
    assert is_member_hash(text) is hash_


def test_redaction_leaves_no_address_in_the_text() -> None:
    text = "Ann.Lee@Example.com is in a compliance state; so is bo@x.org. And x+tag@localhost.test"

    redacted = redact_emails(text)

    for address in ("Ann.Lee@Example.com", "bo@x.org", "x+tag", "localhost.test", "@"):
        assert address not in redacted
    assert f"member {member_hash('Ann.Lee@Example.com')} is in a compliance state" in redacted
    assert f"so is member {member_hash('bo@x.org')}." in redacted


def test_redaction_fills_the_template_and_leaves_other_text_alone() -> None:
    assert redact_emails("to <person@example.com>", "<{}>") == f"to <<{member_hash('person@example.com')}>>"
    assert redact_emails("nothing personal here: 42 @ noon") == "nothing personal here: 42 @ noon"
