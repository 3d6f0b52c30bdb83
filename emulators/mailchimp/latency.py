"""The Mailchimp latency model: simulated server time per API call, so a run on the emulator waits as it would
on the real service (off by default).

Every figure is a parameter (``POST /_admin/latency``, or ``--latency model`` on the command line) in *model
seconds*; ``timeScale`` multiplies every sleep. The time is slept inside the call, so the call holds one of
the key's 10 simultaneous connections meanwhile (the 11th gets 429 "TooManyRequests", as the service answers:
mailchimp-api.md §7.1); ``throttled`` counts those 429s.

Mailchimp publishes no latency figures (webhooks-consent-erasure.md §7.1: "no published number found"), so
the defaults are the planning assumptions of §7.3, to replace with measured ones:

- ``callSeconds`` 0.3: every call, whatever it does;
- ``batchMemberSeconds`` 0.01 per member of a batch subscribe (``POST /lists/{id}``) or of a tag segment's
  ``members_to_add``/``members_to_remove``: a full 500-member batch takes about 5.3 s, inside the 3-10 s the
  planning note assumes;
- ``pageMemberSeconds`` 0.001 per member a page of members returns: a 1,000-member page about 1.3 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emulators.common import Request, Response
from emulators.latency import LatencyBook

_PAGES = ("/members", "/sent-to", "/email-activity", "/unsubscribed")


@dataclass
class LatencyModel(LatencyBook):
    enabled: bool = False
    time_scale: float = 1.0
    call_seconds: float = 0.3
    batch_member_seconds: float = 0.01
    page_member_seconds: float = 0.001


def serve(model: LatencyModel, route: str, request: Request, handler: Callable[[Request], Response]) -> Response:
    """Runs ``handler`` inside the modelled time: a write's before its changes land, a page's after it is read."""
    if request.method == "POST" and (route.endswith("/lists/{list_id}") or route.endswith("/{segment_id}")):
        members = _written_members(request.body)
        time.sleep(model.charge("batch", model.call_seconds + members * model.batch_member_seconds) * model.time_scale)
        return handler(request)
    if request.method != "GET" or not route.endswith(_PAGES):
        time.sleep(model.charge("call", model.call_seconds) * model.time_scale)
        return handler(request)
    response = handler(request)
    rows = _page_rows(response.body)
    time.sleep(model.charge("page", model.call_seconds + rows * model.page_member_seconds) * model.time_scale)
    return response


def _written_members(body: bytes) -> int:
    data = _object(body)
    lists = (data.get(name) for name in ("members", "members_to_add", "members_to_remove"))
    return sum(len(value) for value in lists if isinstance(value, list))


def _page_rows(body: bytes) -> int:
    return max((len(v) for v in _object(body).values() if isinstance(v, list)), default=0)


def _object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
