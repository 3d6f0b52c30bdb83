"""`provision`, `check` and `sync` against the emulators: the product's solution, and Dataverse refusals as one
line naming the table or column, the call and what to do, with exit code 2."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from shared.cli import main
from tests.sync_world import SyncWorld, contact


@pytest.fixture
def world(mailchimp_emulator: Any, dataverse_emulator: Any, azurite: str) -> SyncWorld:
    return SyncWorld(mailchimp_emulator, dataverse_emulator, azurite)


def cli(world: SyncWorld, tmp_path: Path, *argv: str, **overrides: str) -> tuple[int, list[str]]:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": world.env(**overrides)}))
    out = io.StringIO()
    code = main(["--settings", str(settings), *argv], out=out)
    return code, out.getvalue().splitlines()


def test_provision_puts_every_component_into_the_products_solution(world: SyncWorld) -> None:
    created = world.provision()
    assert "created publisher ConsentBridgePublisher (prefix cbr)" in created
    assert "created solution ConsentBridge" in created
    state = world.dataverse.admin.state()
    components = state["solutionComponents"]
    assert components and {c["solution"] for c in components} == {"ConsentBridge"}  # nothing outside it
    kinds = {(c["type"], c["name"], c["table"]) for c in components}
    assert {("Attribute", "cbr_subscriberstatus", table) for table in ("contact", "lead", "account")} <= kinds
    assert {c["type"] for c in components} == {"Entity", "Attribute", "Relationship", "SavedQuery"}
    assert set(state["customTables"]) <= {c["name"] for c in components if c["type"] == "Entity"}
    [publisher] = world.dataverse.admin.state(entity="publishers")["rows"]
    assert (publisher["customizationprefix"], publisher["customizationoptionvalueprefix"]) == ("cbr", 10000)
    assert world.provision() == []  # idempotent: the publisher and the solution are found again


def test_a_publisher_with_another_prefix_is_a_configuration_error(world: SyncWorld, tmp_path: Path) -> None:
    world.provision()
    code, lines = cli(world, tmp_path, "provision", DATAVERSE_PREFIX="abc", SUBSCRIBER_STATUS_COLUMN="abc_status")
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("configuration: DATAVERSE_PREFIX: is 'abc' but the publisher ConsentBridgePublisher")


@pytest.mark.parametrize(
    ("pattern", "method", "status", "names", "todo"),
    [
        (r"/savedqueries$", "GET", 404, "views (savedqueries)", "check that DATAVERSE_URL is the environment's URL"),
        (r"/savedqueries$", "POST", 403, "view '", "System Customizer"),
        (r"/EntityDefinitions$", "POST", 403, "table cbr_", "System Customizer"),
        (r"Attributes$", "POST", 403, "column cbr_subscriberstatus on contact", "System Customizer"),
        (r"/RelationshipDefinitions$", "POST", 400, "lookup cbr_", "run `python -m shared.cli provision`"),
        (r"/publishers$", "GET", 401, "publishers", "application user"),
    ],
)
def test_provision_refusals_are_one_line_and_exit_2(
    world: SyncWorld, tmp_path: Path, pattern: str, method: str, status: int, names: str, todo: str
) -> None:
    world.dataverse.admin.fail_next(1, pattern=pattern, method=method, status=status)
    code, lines = cli(world, tmp_path, "provision")
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"provision stopped at {names}")
    assert f"Dataverse {method} /api/data/v9.2/" in lines[0] and f"answered {status}" in lines[0]
    assert todo in lines[0]


def test_check_names_the_refused_call_and_the_privilege_to_grant(world: SyncWorld, tmp_path: Path) -> None:
    world.seed([contact("ann@example.com")])
    world.dataverse.admin.fail_next(1, pattern=r"/lists\(", method="GET", status=403)
    code, lines = cli(world, tmp_path, "check")
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"link {world.link}: marketing list {world.list_id}: Dataverse GET")
    assert "answered 403" in lines[0] and "grant the Consent Bridge security role Read" in lines[0]


def test_sync_stops_on_a_refusal_with_one_line_and_exit_2(world: SyncWorld, tmp_path: Path) -> None:
    world.seed([contact("ann@example.com")])
    world.dataverse.admin.fail_next(1, pattern=r"/lists\(", method="GET", status=403)
    code, lines = cli(world, tmp_path, "sync", "--retry-delay", "0")
    assert code == 2, lines
    [failed] = [line for line in lines if line.startswith(f"{world.link}:")]
    assert " failed" in failed and "answered 403" in failed and "grant the Consent Bridge security role" in failed
