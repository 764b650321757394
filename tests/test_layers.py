"""The package layout: one installed package, and imports that run only downward.

The components keep their top-level folders (``decider/`` …) and are installed as
subpackages of ``bpfailover`` by pyproject's ``package-dir``. The layers, from the bottom:

    bpfailover.protocol                     the contract: topics, wire models, signing, fence
    bpfailover.{durations,rejections,logs,settings,link,node_metrics}    the shared runtime
    bpfailover.{publisher,decider,actuator,broker}          the components, apart
    bpfailover.cli                          the operator surface, above them all
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
PACKAGES: list[str] = PYPROJECT["tool"]["setuptools"]["packages"]

PROTOCOL = "bpfailover.protocol"
SHARED = {f"bpfailover.{m}" for m in ("durations", "rejections", "logs", "settings", "link", "node_metrics")}
COMPONENTS = {f"bpfailover.{c}" for c in ("publisher", "decider", "actuator", "broker")}
SURFACE = "bpfailover.cli"
TOP_LEVEL_FOLDERS = ("decider", "actuator", "publisher", "broker")


def modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name, from the package-dir mapping."""
    out: dict[str, Path] = {}
    for package, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def imported(path: Path, name: str) -> set[str]:
    """The bpfailover modules (and bare top-level component names) a module imports."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return {m for m in out if m.split(".")[0] in {"bpfailover", *TOP_LEVEL_FOLDERS}}


def layer_of(module: str) -> str:
    if module == "bpfailover":
        return "root"
    if module.startswith(PROTOCOL):
        return "protocol"
    if module.startswith(SURFACE):
        return "surface"
    for component in COMPONENTS:
        if module == component or module.startswith(component + "."):
            return component
    for shared in SHARED:
        if module == shared or module.startswith(shared + "."):
            return "shared"
    raise AssertionError(f"{module} belongs to no layer: add it to tests/test_layers.py")


def allowed(importer: str, target: str) -> bool:
    """May a module of layer ``importer`` import one of layer ``target``?"""
    if target == "root":
        return True
    if importer in ("root", "surface"):
        return True
    if importer == "protocol":
        return target == "protocol"
    if importer == "shared":
        return target in ("protocol", "shared")
    return target in ("protocol", "shared", importer)  # a component: the layers below, and itself


ALL = modules()


def test_every_folder_package_is_listed_for_the_wheel() -> None:
    found = {name for name, path in ALL.items() if path.name == "__init__.py"}
    assert found == set(PACKAGES), "pyproject [tool.setuptools] packages must list every package"


def test_components_install_under_bpfailover_only() -> None:
    assert set(PACKAGE_DIR) == {"bpfailover", *COMPONENTS}
    assert {PACKAGE_DIR[c] for c in COMPONENTS} == set(TOP_LEVEL_FOLDERS)


@pytest.mark.parametrize("name", sorted(ALL))
def test_imports_run_downward(name: str) -> None:
    here = layer_of(name)
    wrong = []
    for target in sorted(imported(ALL[name], name)):
        if target.split(".")[0] in TOP_LEVEL_FOLDERS:
            wrong.append(f"{target} (a bare top-level name: import bpfailover.{target})")
            continue
        # "from bpfailover import __version__" and the like name the root package.
        module = target if target in ALL else target.rpartition(".")[0]
        if module not in ALL:
            continue
        there = layer_of(module)
        if not allowed(here, there):
            wrong.append(f"{target} ({here} may not import {there})")
    assert not wrong, f"{name} imports upward or sideways: {wrong}"


def test_tests_import_the_installed_names() -> None:
    """A bare ``import decider`` would only work from a checkout, never from the wheel."""
    bad = []
    for path in (ROOT / "tests").rglob("*.py"):
        name = ".".join(["tests", *path.relative_to(ROOT / "tests").with_suffix("").parts])
        for target in imported(path, name):
            if target.split(".")[0] in TOP_LEVEL_FOLDERS:
                bad.append(f"{path.relative_to(ROOT)}: {target}")
    assert not bad
