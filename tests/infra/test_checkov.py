"""Checkov over infra/: no parsing error, and no failed check that is not skipped in place with a written reason.

Checkov lives in its own venv because its pinned dependencies clash with the app's. Install it with
    python -m venv .venv-tools && .venv-tools/bin/pip install -r requirements-checkov.txt
or point CHECKOV_BIN at a checkov executable.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.infra import templates as t

INSTALL = "python -m venv .venv-tools && .venv-tools/bin/pip install -r requirements-checkov.txt"


def checkov_executable() -> Path:
    configured = os.environ.get("CHECKOV_BIN")
    candidate = Path(configured) if configured else t.REPO / ".venv-tools" / "bin" / "checkov"
    if not candidate.is_file():
        where = f"CHECKOV_BIN={configured}" if configured else str(candidate)
        pytest.fail(
            f"checkov not found at {where}. Install it from the repository root with: {INSTALL} "
            f"(or set CHECKOV_BIN to a checkov executable)",
            pytrace=False,
        )
    return candidate


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    started = time.monotonic()
    completed = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
        [str(checkov_executable()), "--framework", "bicep", "--skip-download", "-d", "infra", "-o", "json"],
        cwd=t.REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode in (0, 1), f"checkov exited {completed.returncode}: {completed.stderr[-2000:]}"
    output = json.loads(completed.stdout)
    result = output[0] if isinstance(output, list) else output
    result["seconds"] = time.monotonic() - started
    return result


def test_checkov_parses_every_template(report: dict[str, Any]) -> None:
    assert report["check_type"] == "bicep"
    assert report["summary"]["parsing_errors"] == 0, report["results"].get("parsing_errors")
    assert report["summary"]["resource_count"] >= 30, "checkov saw too few resources: did it read the modules?"
    assert report["summary"]["passed"] >= 20


def test_no_check_fails_unless_skipped_in_place_with_a_reason(report: dict[str, Any]) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, (
        "checkov checks failed; fix them, or skip one inside its resource with "
        "'// checkov:skip=CKV_...: reason':\n" + "\n".join(failed)
    )
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "").strip()
        assert len(reason) >= 20, f"{check['check_id']} on {check['resource']} is skipped without a real reason"


def test_checkov_is_the_pinned_version(report: dict[str, Any]) -> None:
    pinned = (t.REPO / "requirements-checkov.txt").read_text(encoding="utf-8").split("==")[1].strip()
    assert report["summary"]["checkov_version"] == pinned, f"install it with: {INSTALL}"


def test_the_security_checks_that_matter_ran_and_passed(report: dict[str, Any]) -> None:
    passed = {c["check_id"] for c in report["results"]["passed_checks"]}
    # HTTPS only, TLS 1.2 on storage and app, FTP off, remote debugging off, managed identity, purge protection.
    assert {
        "CKV_AZURE_3",
        "CKV_AZURE_44",
        "CKV_AZURE_70",
        "CKV_AZURE_145",
        "CKV_AZURE_78",
        "CKV_AZURE_72",
        "CKV_AZURE_71",
        "CKV_AZURE_110",
        "CKV_AZURE_42",
    } <= passed
