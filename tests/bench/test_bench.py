"""The benchmark end to end at a tiny size, and its efficiency model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.model import Work, minimum
from bench.runner import operation

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 300
RUN_FIGURES = {
    "run",
    "exit_code",
    "status",
    "wall_seconds",
    "process_seconds",
    "cpu_seconds",
    "records_per_second",
    "peak_rss_mb",
    "load_average",
    "api_calls",
    "work",
    "minimum",
    "ratio",
    "minimum_as_read",
    "ratio_as_read",
    "storage",
    "counts",
    "summary",
    "targets",
}


def test_benchmark_reports_every_figure_for_every_run() -> None:
    command = [sys.executable, "-m", "bench", "--records", str(RECORDS), "--scale", "1", "--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)

    assert result["benchmark"]["sizes"] == [RECORDS]
    assert result["rss_growth_percent"] is None  # one size only
    [size] = result["sizes"]
    assert size["records"] == RECORDS and size["members"] > 0
    assert size["changes"]["opt_outs"] > 0 and size["changes"]["unsubscribes"] > 0
    runs = {run["run"]: run for run in size["runs"]}
    assert list(runs) == ["initial", "settling", "incremental", "no-change", "idle"]
    for name, run in runs.items():
        assert set(run) >= RUN_FIGURES, f"{name} lacks {RUN_FIGURES - set(run)}"
        assert run["exit_code"] == 0 and run["status"] == "completed", run["summary"]
        calls = run["api_calls"]
        for side in ("mailchimp", "dataverse"):
            assert calls[side]["total"] == sum(calls[side]["endpoints"].values()) >= 1
        assert calls["total"] == calls["mailchimp"]["total"] + calls["dataverse"]["total"]
        low = run["minimum"]
        assert low["total"] == low["mailchimp"] + low["dataverse"] >= 3  # a read on each side and the list
        assert run["ratio"] == round(calls["total"] / low["total"], 2)
        assert run["storage"]["total"] == sum(run["storage"]["operations"].values()) > 0
        assert 20 < run["peak_rss_mb"] < 2000
        assert run["wall_seconds"] > 0 and run["cpu_seconds"] > 0

    initial = runs["initial"]["work"]
    assert initial["records_to_read"] == initial["records_read"] == RECORDS  # a full pass reads the whole list
    assert initial["members_to_read"] == initial["members_read"] == size["members"]
    assert initial["members_written"] > 0 and initial["records_written"] > 0
    assert runs["incremental"]["work"]["records_written"] > 0
    # nothing changed: a handful of reads, no writes
    quiet = runs["no-change"]
    assert quiet["api_calls"]["total"] - quiet["work"]["status_writes"] <= 8
    assert quiet["work"]["members_written"] == quiet["work"]["records_written"] == 0
    idle = runs["idle"]  # settled: one page or one read of each kind, the campaign list, and the status row
    assert idle["work"]["status_writes"] == 1
    assert idle["api_calls"]["total"] - 1 <= 6 and idle["work"]["records_written"] == 0


def test_minimum_adds_one_call_per_page_of_each_kind_of_work() -> None:
    low = minimum(
        Work(members_read=2001, members_written=500, records_read=0, records_written=1001, static_incremental=True)
    )
    assert (low.mailchimp_read, low.mailchimp_write) == (3, 1)
    assert (low.dataverse_list, low.dataverse_read, low.dataverse_memberships, low.dataverse_write) == (1, 1, 1, 2)
    assert low.dataverse_status == 1  # the link's status row in Dynamics
    assert low.total == 10
    nothing = minimum(Work(0, 0, 0, 0, static_incremental=False))
    # learning that nothing changed still takes a read on each side and the list, and saying so the status write
    assert nothing.total == 4
    # a full pass lists the audience's archived members too: at least one page
    assert minimum(Work(0, 0, 0, 0, static_incremental=False, archived_read=0)).mailchimp_archived == 1
    assert minimum(Work(0, 0, 0, 0, static_incremental=False, archived_read=2500)).total == 4 + 3


def test_storage_requests_are_named_by_table_or_queue_not_by_key() -> None:
    base = "http://127.0.0.1:10002/devstoreaccount1"
    assert (
        operation("table", "GET", f"{base}/IdentityMap(PartitionKey='a',RowKey='s:0f3')")
        == "table GET IdentityMap(entity)"
    )
    assert operation("table", "POST", f"{base}/$batch") == "table POST $batch"
    assert (
        operation("queue", "DELETE", f"{base}/sync-batches/messages/abc-123?popreceipt=x")
        == "queue DELETE sync-batches/messages/{id}"
    )


def test_benchmark_on_the_latency_model_reports_each_run_against_its_bound() -> None:
    command = [sys.executable, "-m", "bench", "--records", "200", "--scale", "1", "--json"]
    command += ["--latency", "model", "--time-scale", "0.01,idle=0.02", "--workers", "2"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)  # noqa: S603
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)

    assert result["benchmark"]["latency"] == "model" and result["benchmark"]["workers"] == 2
    runs = result["runs"]
    assert [run["run"] for run in runs] == ["initial", "settling", "incremental", "no-change", "idle"]
    measured = {run["run"]: run for run in result["sizes"][0]["runs"]}
    for run in runs:
        assert set(run) >= {"run", "records", "wall_s", "bound_s", "calls"}
        full = measured[run["run"]]
        assert run["calls"] == full["api_calls"]["total"] and run["wall_s"] > 0
        latency = full["latency"]
        assert latency["time_scale"] == (0.02 if run["run"] == "idle" else 0.01)
        parts = latency["bound_model_s"]
        dataverse = max(latency["dataverse_server_s"] / min(latency["dop_hint"], 52), parts["dataverse_budget_s"])
        expected = max(dataverse, latency["mailchimp_server_s"] / 10) * latency["time_scale"]
        assert run["bound_s"] == round(expected, 3) > 0
        assert run["ratio_to_bound"] == round(run["wall_s"] / run["bound_s"], 2)
        assert run["throttled_429"] == latency["throttled_429"]
    initial = measured["initial"]
    assert initial["latency"]["dataverse_by_kind_s"]["$batch"] > 0 and initial["work"]["records_written"] >= 200
