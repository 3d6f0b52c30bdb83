"""Every KQL query of the workbook and of the alert rules compiles with Microsoft's Kusto parser.

The parser is the npm package @kusto/language-service-next (pinned in package.json, installed by `npm ci`), run by
node through tests/infra/kql_check.js against the Application Insights `traces` and `requests` tables. A query the
portal would refuse (a reserved word used as a name, an unknown column or function, a type error) fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache

import pytest

from tests.infra import templates as t

CHECKER = t.REPO / "tests" / "infra" / "kql_check.js"
PARSER = t.REPO / "node_modules" / "@kusto" / "language-service-next"

# The columns Application Insights gives these tables (Azure Monitor table reference, legacy names).
_COMMON = (
    "timestamp:datetime, itemType:string, customDimensions:dynamic, customMeasurements:dynamic, "
    "operation_Name:string, operation_Id:string, operation_ParentId:string, operation_SyntheticSource:string, "
    "session_Id:string, user_Id:string, user_AuthenticatedId:string, user_AccountId:string, "
    "application_Version:string, client_Type:string, client_Model:string, client_OS:string, client_IP:string, "
    "client_City:string, client_StateOrProvince:string, client_CountryOrRegion:string, client_Browser:string, "
    "cloud_RoleName:string, cloud_RoleInstance:string, appId:string, appName:string, iKey:string, "
    "sdkVersion:string, itemId:string, itemCount:int"
)
TABLES = {
    "traces": f"({_COMMON}, message:string, severityLevel:int)",
    "requests": (
        f"({_COMMON}, id:string, source:string, name:string, url:string, success:bool, resultCode:string, "
        "duration:real, performanceBucket:string)"
    ),
}

# What the portal puts in place of each workbook parameter: a relative and an absolute time range, a time grain,
# and the link picker's "all links" value. The alert rules' placeholder is filled by replace() in alerts.bicep.
TIME_RANGES = ("> ago(1d)", "between (datetime(2026-11-01T00:00:00Z) .. datetime(2026-11-02T00:00:00Z))")
PARAMETER_VALUES = {"TimeRange:grain": "1h", "Link": "*"}
# What alerts.bicep puts in place of its placeholders: twice the default 15-minute schedule, and SYNC_LINKS' names
# as string() writes an array (a JSON array, which is also a KQL dynamic literal), with links and without.
ALERT_VALUES = (
    {
        "__STALE_AFTER__": "30m",
        "__LINKS__": json.dumps(
            [
                {
                    "name": "newsletter",
                    "marketingListId": "6f1c0e2a-0000-4000-8000-000000000001",
                    "audienceId": "a1b2c3",
                },
                {
                    "name": "leads",
                    "marketingListId": "6f1c0e2a-0000-4000-8000-000000000002",
                    "audienceId": "d4",
                    "tag": 'VIP "gold"',
                },
            ]
        ),
    },
    {"__STALE_AFTER__": "1440m", "__LINKS__": "[]"},
)
WORKBOOK_PARAMETER = re.compile(r"\{([A-Za-z]+(?::[a-z]+)?)\}")


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node not found: install Node.js (the README's quick start needs it too)", pytrace=False)
    if not PARSER.is_dir():
        pytest.fail(f"{PARSER.relative_to(t.REPO)} is missing: run `npm ci` in the repository root", pytrace=False)
    return found


def compile_queries(queries: dict[str, str]) -> dict[str, list[dict[str, object]]]:
    """The parser's diagnostics for each query, by the same keys."""
    completed = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
        [node(), str(CHECKER)],
        input=json.dumps({"tables": TABLES, "queries": queries}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=t.REPO,
    )
    assert completed.returncode == 0, f"kql_check.js failed: {completed.stderr[-2000:]}"
    result: dict[str, list[dict[str, object]]] = json.loads(completed.stdout)
    return result


def expand_workbook(query: str, time_range: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "TimeRange":
            return time_range
        assert name in PARAMETER_VALUES, f"workbook parameter {{{name}}} has no test value"
        return PARAMETER_VALUES[name]

    return WORKBOOK_PARAMETER.sub(value, query)


def deployed_queries() -> dict[str, str]:
    """Every query as the portal or the alert service receives it, with its parameters filled in."""
    queries = {}
    for where, query in t.workbook_queries().items():
        for index, time_range in enumerate(TIME_RANGES):
            queries[f"{where} (time range {index})"] = expand_workbook(query, time_range)
    for where, query in t.alert_queries().items():
        for index, values in enumerate(ALERT_VALUES):
            filled = query
            for placeholder, value in values.items():
                filled = filled.replace(placeholder, value)
            queries[f"{where} (values {index})"] = filled
    return queries


@cache
def compiled() -> dict[str, list[dict[str, object]]]:
    return compile_queries(deployed_queries())


def describe(query: str, diagnostics: list[dict[str, object]]) -> str:
    lines = []
    for d in diagnostics:
        start, length = int(str(d["start"])), int(str(d["length"]))
        lines.append(f"  {d['code']} {d['severity']}: {d['message']} at {query[start : start + max(length, 1)]!r}")
    return "\n".join(lines)


@pytest.mark.parametrize("where", sorted(deployed_queries()))
def test_query_compiles_without_errors_or_warnings(where: str) -> None:
    query = deployed_queries()[where]
    diagnostics = compiled()[where]
    assert not diagnostics, f"{where} does not compile cleanly:\n{describe(query, diagnostics)}\n{query}"


def test_every_workbook_and_alert_query_is_compiled() -> None:
    queries = deployed_queries()
    assert len(queries) == len(TIME_RANGES) * len(t.workbook_queries()) + len(ALERT_VALUES) * len(t.alert_queries())
    assert len(t.workbook_queries()) >= 10 and len(t.alert_queries()) >= 4
    assert not any("__" in q or WORKBOOK_PARAMETER.search(q) for q in queries.values()), "a placeholder is left"


# Queries the portal refuses, with the code the parser gives each, and one it accepts: the checker can fail.
REFUSED = {
    'traces | extend kind = iif(severityLevel > 2, "error", "info")': "KS228",  # a reserved word as a name
    "traces | where sucess == false": "KS142",  # an unknown column
    "requests | summarize count() by bin(timestamp, 1h) | where message has 'x'": "KS142",  # dropped by summarize
    "traces | where timestamp > ago(1d": "KS005",  # unbalanced parenthesis
}
ACCEPTED = (
    "traces | where severityLevel >= 3 and cloud_RoleName != '' | extend d = customDimensions "
    "| join kind=leftouter (requests | where success == false | project operation_Id, resultCode, duration) "
    "on operation_Id | project timestamp, message, resultCode, duration"
)


@cache
def samples() -> dict[str, list[dict[str, object]]]:
    return compile_queries({**{query: query for query in REFUSED}, "accepted": ACCEPTED})


@pytest.mark.parametrize("query", sorted(REFUSED))
def test_the_checker_reports_what_the_portal_refuses(query: str) -> None:
    assert REFUSED[query] in {d["code"] for d in samples()[query]}, samples()[query]


def test_the_checker_accepts_the_columns_application_insights_has() -> None:
    assert samples()["accepted"] == []
