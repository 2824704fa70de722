"""The test tool chain that runs is the one ``constraints.txt`` pins.

A fresh machine must install the same versions as every other: an unpinned
pytest or schemathesis release once broke the fuzzing tests on any new install.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"
TOOL_CHAIN = ("pytest", "pytest-timeout", "schemathesis", "hypothesis", "playwright", "httpx", "ruff", "mypy")


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: constraints pin exact versions"
            out[canonicalize_name(req.name)] = spec.version
    return out


def test_every_dependency_is_pinned() -> None:
    pinned = pins()
    missing = [name for name in TOOL_CHAIN if name not in pinned]
    assert not missing, f"constraints.txt does not pin {missing}"
    wanted = [canonicalize_name(Requirement(r).name) for r in metadata.requires("assay") or []]
    assert not [name for name in wanted if name not in pinned], "a dependency of assay is not pinned"


@pytest.mark.parametrize("name", TOOL_CHAIN)
def test_installed_tool_chain_matches_the_pins(name: str) -> None:
    installed = metadata.version(name)
    assert installed == pins()[name], (
        f"{name} {installed} is installed but constraints.txt pins {pins()[name]}: "
        'install with `python -m pip install -c constraints.txt -e ".[dev,postgres,redis]"`'
    )
