"""Email addresses: how Mailchimp keys them (normalised, hashed) and how they are kept out of text.

The member hash is computed here and nowhere else: md5 of the trimmed, lower-cased address, which is
Mailchimp's ``subscriber_hash`` and the only name by which logs and errors may speak of a person.
"""

from __future__ import annotations

import hashlib
import re

MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit; Mailchimp refuses longer addresses
MAX_LOCAL_PART_LENGTH = 64

# Dot-atom local part and a host name with an alphabetic (or punycode) top-level domain: what Mailchimp
# accepts. Quoted local parts, IP literals, dotless hosts and non-ASCII addresses are refused there too.
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TOP_LEVEL = r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
_EMAIL = re.compile("(" + _ATOM + r"(?:\." + _ATOM + ")*)@(?:" + _LABEL + r"\.)+" + _TOP_LEVEL, re.ASCII)
# anything that looks like an address inside free text (error messages, paths), valid or not
_IN_TEXT = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_HASH = re.compile(r"^[0-9a-f]{32}$")


def normalize_email(raw: str | None) -> str | None:
    """The address as Mailchimp keys it (trimmed, lower-cased; plus-addressing kept), or None when missing
    or when its syntax is one Mailchimp would refuse."""
    if raw is None:
        return None
    email = raw.strip().lower()
    if not email or len(email) > MAX_EMAIL_LENGTH:
        return None
    match = _EMAIL.fullmatch(email)
    if match is None or len(match.group(1)) > MAX_LOCAL_PART_LENGTH:
        return None
    return email


def email_problem(raw: str | None) -> str | None:
    """Why the sync cannot use the address: "missing-email" or "invalid-email"; None when it can."""
    if raw is None or not raw.strip():
        return "missing-email"
    if normalize_email(raw) is None:
        return "invalid-email"
    return None


def member_hash(email: str) -> str:
    """Mailchimp's subscriber_hash: md5 of the trimmed, lower-cased address.

    It also names a refused address in logs and errors, so it does not require a valid one."""
    return hashlib.md5(email.strip().lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def is_member_hash(text: str) -> bool:
    return bool(_HASH.match(text))


def redact_emails(text: str, template: str = "member {}") -> str:
    """Every email address in ``text`` replaced by ``template`` filled with its member hash."""
    return _IN_TEXT.sub(lambda found: template.format(member_hash(found.group(0))), text)
