"""Reading the Bicep templates as data: pycep-parser turns each file into JSON that the tests walk.

In pycep's JSON a bare identifier (a parameter, variable or resource name) and a string literal both come out
as Python strings; the helpers here tell them apart by looking the name up among the file's declarations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"
WORKBOOK = INFRA / "workbook.json"
PARAMETERS = INFRA / "main.parameters.json"


@dataclass(frozen=True)
class Resource:
    """One declared resource: its symbolic name, type and its body with any loop or condition unwrapped."""

    file: Path
    symbol: str
    type: str
    existing: bool
    conditional: bool
    body: dict[str, Any]


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@cache
def parse(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def module_path(name: str) -> Path:
    return MODULES / f"{name}.bicep"


def resources(path: Path) -> list[Resource]:
    found = []
    for symbol, entry in (parse(path).get("resources") or {}).items():
        body = entry["config"]
        conditional = False
        while isinstance(body, dict) and "config" in body and ("condition" in body or "loop_type" in body):
            conditional = conditional or "condition" in body
            body = body["config"]
        found.append(Resource(path, symbol, entry["type"], bool(entry.get("existing")), conditional, body))
    return found


def declared(path: Path, type_: str) -> list[Resource]:
    """Resources of one type that the file creates (not `existing` references)."""
    return [r for r in resources(path) if r.type == type_ and not r.existing]


def all_declared(type_: str) -> list[Resource]:
    return [r for path in bicep_files() for r in declared(path, type_)]


def parameters(path: Path) -> dict[str, Any]:
    return parse(path).get("parameters") or {}


def variables(path: Path) -> dict[str, Any]:
    return parse(path).get("variables") or {}


def decorators(param: dict[str, Any]) -> dict[str, Any]:
    return {d["type"]: d.get("argument") for d in param.get("decorators") or []}


def is_function(value: Any, name: str) -> bool:
    return isinstance(value, dict) and value.get("function", {}).get("type") == name


def function_args(value: Any) -> dict[str, Any]:
    return value["function"]["parameters"]


def property_path(value: Any) -> list[str] | None:
    """['storage', 'outputs', 'name'] for `storage.outputs.name`; None for anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "property_accessor":
        operands = value["operator"]["operands"]
        head, tail = property_path(operands["operand_1"]), property_path(operands["operand_2"])
        if head is not None and tail is not None:
            return head + tail
    return None


def strings(value: Any) -> Iterator[str]:
    """Every string anywhere inside a parsed value (keys included), for searches such as 'no AccountKey='."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def function_names(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if "function" in value and isinstance(value["function"], dict):
            yield str(value["function"].get("type"))
        for item in value.values():
            yield from function_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from function_names(item)


def app_settings(site: Resource) -> dict[str, Any]:
    entries = site.body["properties"]["siteConfig"]["appSettings"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"duplicate app settings in {site.file.name}: {names}"
    return {entry["name"]: entry["value"] for entry in entries}


def workbook() -> dict[str, Any]:
    return json.loads(WORKBOOK.read_text(encoding="utf-8"))


def workbook_queries() -> dict[str, str]:
    """Every KQL text in the workbook, items and parameters alike, keyed by where it sits."""
    found: dict[str, str] = {}

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "query" and isinstance(item, str):
                    found[where] = item
                else:
                    walk(item, f"{where}/{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                name = item.get("name") if isinstance(item, dict) else None
                walk(item, f"{where}/{name or index}")

    walk(workbook(), "workbook")
    return found


def alert_queries() -> dict[str, str]:
    """The KQL of every scheduled query rule, resolved from the variables (and replace()) that hold it."""
    path = module_path("alerts")
    values = variables(path)
    found: dict[str, str] = {}
    for rule in declared(path, "Microsoft.Insights/scheduledQueryRules"):
        for index, condition in enumerate(rule.body["properties"]["criteria"]["allOf"]):
            found[f"{rule.symbol}[{index}]"] = resolve_text(condition["query"], values)
    return found


def resolve_text(value: Any, values: dict[str, Any]) -> str:
    """The text of a string-valued expression built from variables and replace(); placeholders are kept."""
    if isinstance(value, str):
        return resolve_text(values[value]["value"], values) if value in values else value
    if is_function(value, "replace"):
        args = function_args(value)
        return resolve_text(args["original_string"], values)
    raise AssertionError(f"cannot read a query from {value!r}")


DIMENSION_REFERENCE = re.compile(r"\bd\.([A-Za-z_][A-Za-z0-9_]*)")
COMPARISON = re.compile(r"tostring\(d\.([A-Za-z_]+)\)\s*(?:==|!=)\s*\"([^\"]*)\"")
MEMBERSHIP = re.compile(r"tostring\(d\.([A-Za-z_]+)\)\s+in\s*\(([^)]*)\)")
EXTRACT = re.compile(r"extract\(@\"([^\"]*)\",\s*1,\s*message\)")
QUOTED = re.compile(r"\"([^\"]*)\"")
