"""The real-time benchmark end to end in its quick form: every figure reported, the correctness ones hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_quick_realtime_benchmark_reports_every_figure() -> None:
    command = [sys.executable, "-m", "bench.realtime", "--quick", "--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    for direction in ("mailchimp_to_dynamics", "dynamics_to_mailchimp"):
        spread = result["latency"][direction]
        assert spread["arrived"] == spread["events"] == 20
        assert 0 < spread["p50"] <= spread["p95"] <= spread["max"]
    burst = result["burst"]
    assert burst["applied"] == burst["changes"] == 300
    assert burst["answers_5xx"] == 0
    assert burst["model_minimum"] > 0 and burst["ratio"] == round(
        sum(burst["api_calls"].values()) / burst["model_minimum"], 2
    )
    assert burst["own_write_echoes_dropped"] > 0
    faults = result["faults"]
    assert faults["deliveries"]["mailchimp"]["dropped"] > 0 and faults["deliveries"]["mailchimp"]["duplicate"] > 0
    assert faults["end_state_as_without_webhooks"] is True
    assert faults["written_twice"] == 0
    assert sum(faults["missed_by_webhooks_in_sweep"].values()) > 0  # the sweep saw what the drops hid
    refusals = result["refusals"]
    assert set(refusals["answers"].values()) == {401}
    assert refusals["nothing_enqueued"] is True
    assert refusals["a_genuine_delivery_then"] == 200 and refusals["genuine_applied"] is True
