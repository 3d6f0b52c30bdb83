"""The timer function: it plans runs and says when the schedule monitor found a missed tick (past_due)."""

from __future__ import annotations

import logging

import pytest
from azure.functions.timer import TimerRequest

from functions import timer
from shared import app as engine
from shared.settings import SettingsError
from tests.sync_world import SyncWorld, contact

TIMER_LOGGER = "functions.timer"


def plan_sync():
    return timer.plan_sync.build().get_user_function()


@pytest.fixture
def world(mailchimp_emulator, dataverse_emulator, azurite, monkeypatch):
    world = SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)
    for key, value in world.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(engine, "_context", None)  # the process-wide context is rebuilt from these settings
    world.seed([contact("person@example.org")])
    return world


def test_a_past_due_tick_is_logged_with_the_runs_it_started(world, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=TIMER_LOGGER)
    plan_sync()(TimerRequest(past_due=True))
    [run] = engine.context().ledger.latest_runs(world.link)
    [line] = [r for r in caplog.records if r.name == TIMER_LOGGER]
    assert line.levelno == logging.WARNING
    assert "past due" in line.getMessage() and f"{world.link} {run.run_id}" in line.getMessage()


def test_a_tick_on_time_logs_nothing_of_the_kind(world, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=TIMER_LOGGER)
    plan_sync()(TimerRequest(past_due=False))
    assert not [r for r in caplog.records if r.name == TIMER_LOGGER]
    assert len(engine.context().ledger.latest_runs(world.link)) == 1


def test_a_past_due_tick_is_logged_even_when_planning_fails(monkeypatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("SYNC_LINKS", raising=False)
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setattr(engine, "_context", None)
    caplog.set_level(logging.INFO, logger=TIMER_LOGGER)
    with pytest.raises(SettingsError):
        plan_sync()(TimerRequest(past_due=True))
    [line] = [r for r in caplog.records if r.name == TIMER_LOGGER]
    assert "past due" in line.getMessage() and line.getMessage().endswith("runs started now: none")
