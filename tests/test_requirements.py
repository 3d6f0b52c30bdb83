"""requirements.txt installs on every Python the project supports (pyproject's requires-python, 3.11 on)."""

from __future__ import annotations

from collections import defaultdict
from importlib.metadata import PackageNotFoundError, version
from importlib.metadata import metadata as package_metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
PYTHONS = ("3.11", "3.12", "3.13", "3.14")


def requirements() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines())
    return [Requirement(line) for line in lines if line]


def applies(requirement: Requirement, python: str) -> bool:
    if requirement.marker is None:
        return True
    environment = default_environment() | {"python_version": python, "python_full_version": f"{python}.0"}
    return requirement.marker.evaluate(environment)


def pinned(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement} is not pinned to one version"
    return specifier.version


def test_every_package_is_pinned_exactly_once_for_each_python() -> None:
    by_name: dict[str, list[Requirement]] = defaultdict(list)
    for requirement in requirements():
        pinned(requirement)
        by_name[requirement.name].append(requirement)
    for name, lines in by_name.items():
        for python in PYTHONS:
            chosen = [str(r) for r in lines if applies(r, python)]
            assert len(chosen) == 1, f"{name} on Python {python}: {chosen or 'no pin'}"


HERE = str(Version(default_environment()["python_version"]))


# The pins for this interpreter are installed (scripts/bootstrap), so their metadata is at hand offline.
@pytest.mark.parametrize("requirement", [r for r in requirements() if applies(r, HERE)], ids=str)
def test_the_installed_release_admits_every_python_its_pin_is_for(requirement: Requirement) -> None:
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        pytest.fail(f"{requirement.name} is not installed: run scripts/bootstrap", pytrace=False)
    assert installed == pinned(requirement), f"{requirement.name} {installed} is installed, the pin says otherwise"
    requires = SpecifierSet(package_metadata(requirement.name).get("Requires-Python") or "")
    for python in PYTHONS[:-1]:  # 3.14 is not released for every package yet
        if applies(requirement, python):
            assert requires.contains(f"{python}.0"), (
                f"{requirement} is used on Python {python}, which its release refuses (Requires-Python {requires})"
            )
