"""The erasure feature without the world: its setting, the addresses it takes, what forget prints."""

from __future__ import annotations

import pytest

from shared.features.erasure.forget import AddressError, Forgetting, address_of, describe_forgetting
from shared.settings import SettingsError, load_settings
from tests.test_settings import env


def test_on_dynamics_delete_defaults_to_keep_and_takes_only_its_three_values():
    assert load_settings(env()).on_dynamics_delete == "keep"
    for value in ("keep", "archive", "forget"):
        assert load_settings(env(ON_DYNAMICS_DELETE=value)).on_dynamics_delete == value
    with pytest.raises(SettingsError) as raised:
        load_settings(env(ON_DYNAMICS_DELETE="delete"))
    assert [str(p) for p in raised.value.problems] == [
        "ON_DYNAMICS_DELETE: expected one of keep, archive, forget; got 'delete'"
    ]


@pytest.mark.parametrize("text", ["", "   ", "nobody", "two@@example.com", "a b@example.com"])
def test_forget_and_explain_take_only_an_address_and_never_repeat_the_text(text):
    with pytest.raises(AddressError) as raised:
        address_of(text)
    assert "not an email address" in str(raised.value)


def test_an_address_is_keyed_as_mailchimp_keys_it():
    assert address_of("  Ann.Person+News@Example.COM ") == "ann.person+news@example.com"


def test_what_forget_prints_says_what_remains_and_names_no_address():
    done = Forgetting("a" * 32, records=[("contact", "c1")], remaining=["link news: Mailchimp refused"])
    done.deleted_in.append("news")
    done.scrubbed.append("link news: the identity map's base")
    text = "\n".join(describe_forgetting(done))
    assert text.splitlines()[0].startswith(f"member {'a' * 32}: deleted permanently in 1 audience(s) (news)")
    assert "removed: link news: the identity map's base" in text
    assert "1 Dynamics record(s) still hold the address" in text and "  contact c1" in text
    assert "NOT DONE (run forget again once the service answers):\n  link news: Mailchimp refused" in text
    assert not done.done and Forgetting("b" * 32).done
