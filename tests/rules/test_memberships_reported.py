"""Who changed a membership in Mailchimp and why, from what Mailchimp reports: the source and the reason's words."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.rules.consent import SUBSCRIBER_STATUS_CODES
from shared.rules.memberships import (
    SOURCE_ADMIN,
    SOURCE_DYNAMICS_USER,
    SOURCE_PRODUCT,
    SOURCE_SUBSCRIBER,
    Reported,
    reason_text,
    source_of,
)

ADMIN = "N/A (Unsubscribed by admin)"


@pytest.mark.parametrize("reason", [ADMIN, "N/A (Unsubscribed by an admin)", " n/a (unsubscribed by admin) "])
def test_both_spellings_of_an_admins_unsubscribe_make_the_admin_the_source(reason):
    reported = Reported("unsubscribed", reason)
    assert reported.by_admin
    assert source_of("mailchimp-changed", reported=reported) == SOURCE_ADMIN
    assert source_of("both-changed-mailchimp-newer", reported=reported) == SOURCE_ADMIN
    assert reported.words() == "unsubscribed by an admin in Mailchimp"


@pytest.mark.parametrize(
    "reported",
    [
        Reported("unsubscribed", "Too many emails"),
        Reported("unsubscribed", ""),
        Reported("unsubscribed", None),  # not read: nothing says an admin did it
        Reported("unsubscribed", "N/A (Unsubscribed by admin) because I said so"),  # a person's free text
        Reported("cleaned", ADMIN),  # only an unsubscribed member's reason counts
        Reported("subscribed", ADMIN),
    ],
)
def test_any_other_mailchimp_change_is_the_persons_own(reported):
    assert not reported.by_admin
    assert source_of("mailchimp-changed", reported=reported) == SOURCE_SUBSCRIBER


def test_what_mailchimp_reported_never_changes_who_acted_in_dynamics():
    admin = Reported("unsubscribed", ADMIN)
    assert source_of("dynamics-opt-out", reported=admin) == SOURCE_DYNAMICS_USER
    assert source_of("resubscribe-blocked", reported=Reported("unsubscribed", "Moved")) == SOURCE_DYNAMICS_USER
    assert source_of("no-change", scoped=True, reported=admin) == SOURCE_DYNAMICS_USER
    assert source_of("mailchimp-changed") == SOURCE_SUBSCRIBER  # nothing reported: the person, as before


def test_a_status_the_sides_agreed_on_is_the_products_unless_mailchimp_accounts_for_it():
    assert source_of("first-meeting-agree") == SOURCE_PRODUCT
    assert source_of("first-meeting-agree", reported=Reported("subscribed")) == SOURCE_PRODUCT
    assert source_of("first-meeting-agree", reported=Reported("unsubscribed", None)) == SOURCE_PRODUCT
    assert source_of("first-meeting-agree", reported=Reported("unsubscribed", ADMIN)) == SOURCE_ADMIN
    assert source_of("first-meeting-opt-out-wins", reported=Reported("unsubscribed", "Moved")) == SOURCE_SUBSCRIBER
    assert source_of("stale-base-opt-out-wins", reported=Reported("cleaned")) == SOURCE_SUBSCRIBER


@pytest.mark.parametrize(
    ("reported", "words"),
    [
        (Reported("unsubscribed", "Too many emails"), 'unsubscribed by the person, reason: "Too many emails"'),
        (
            Reported("unsubscribed", "Too many emails", "manual", "c0ffee"),
            'unsubscribed by the person in campaign c0ffee, reason: "Too many emails"',
        ),
        (Reported("unsubscribed", ""), "unsubscribed by the person"),
        (Reported("unsubscribed", None), ""),  # Mailchimp said nothing: the rule's words alone
        (Reported("unsubscribed", None, "manual", "c0ffee"), "unsubscribed by the person in campaign c0ffee"),
        (
            Reported("unsubscribed", ADMIN, "manual", "c0ffee"),
            "unsubscribed by an admin in Mailchimp in campaign c0ffee",
        ),
        (
            Reported("unsubscribed", "The emails are spam and should be reported", "abuse", "c0ffee"),
            'the person reported campaign c0ffee as spam, reason: "The emails are spam and should be reported"',
        ),
        (Reported("unsubscribed", None, "abuse"), "the person reported a campaign as spam"),
        (Reported("cleaned", None, "hard", "c0ffee"), "cleaned by Mailchimp: a hard bounce in campaign c0ffee"),
        (Reported("cleaned", None, "abuse", "c0ffee"), "cleaned by Mailchimp: an abuse complaint in campaign c0ffee"),
        (Reported("cleaned"), "cleaned by Mailchimp: the address bounced"),
        (Reported("subscribed", "Too many emails", "manual", "c0ffee"), ""),
        (Reported("pending"), ""),
    ],
)
def test_the_words_say_who_why_and_which_campaign(reported, words):
    assert reported.words() == words


def test_the_reason_puts_mailchimps_words_before_the_rules():
    reported = Reported("unsubscribed", "Too many emails")
    rule = "the person's status changed in Mailchimp"
    assert reason_text(reported, rule, 400) == f'unsubscribed by the person, reason: "Too many emails"; {rule}'
    assert reason_text(None, rule, 400) == rule
    assert reason_text(Reported("subscribed"), rule, 400) == rule
    assert reason_text(reported, "", 400) == 'unsubscribed by the person, reason: "Too many emails"'
    assert reason_text(None, "", 400) == ""


def test_a_long_reason_is_cut_and_the_rules_words_are_kept_whole():
    rule = "the person's status changed in Mailchimp"
    text = reason_text(Reported("unsubscribed", "x" * 1000), rule, 400)
    assert len(text) == 400
    assert text.endswith(f"…; {rule}")
    assert text.startswith('unsubscribed by the person, reason: "xxx')


@given(
    st.sampled_from(tuple(SUBSCRIBER_STATUS_CODES)),
    st.none() | st.text(max_size=600),
    st.none() | st.sampled_from(["manual", "abuse", "hard", ""]),
    st.none() | st.text(alphabet="0123456789abcdef", min_size=1, max_size=10),
    st.text(max_size=300),
    st.integers(min_value=1, max_value=500),
)
def test_the_reason_always_fits_its_column(status, reason, event_reason, campaign, rule, limit):
    text = reason_text(Reported(status, reason, event_reason, campaign), rule, limit)
    assert len(text) <= limit
    if len(rule) + 22 <= limit:  # room for the rule's words and some of Mailchimp's
        assert text.endswith(rule)
