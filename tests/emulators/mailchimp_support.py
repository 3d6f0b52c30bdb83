"""What the Mailchimp emulator tests share: the key, the audience id, hashing, the official and a second client."""

from __future__ import annotations

import hashlib
from typing import Any

import mailchimp3
import mailchimp_marketing

KEY = "0123456789abcdef0123456789abcdef-us21"
LIST = "a1b2c3d4e5"


def md5(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


def official_client(running: Any) -> Any:
    """The pinned mailchimp-marketing 3.0.80 client, pointed at the emulator (the host must not contain "server")."""
    client = mailchimp_marketing.Client()
    client.set_config({"api_key": KEY, "server": "us21"})
    client.api_client.host = running.url + "/3.0"
    return client


def independent_client(running: Any) -> Any:
    """The pinned mailchimp3 3.0.21 client (a second implementation of the API), pointed at the emulator."""
    client = mailchimp3.MailChimp(mc_api=KEY, timeout=30)
    client.base_url = running.url + "/3.0/"
    return client
