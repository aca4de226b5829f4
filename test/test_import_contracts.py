"""The package's layers (setup.cfg [importlinter]), checked with import-linter's ``lint-imports``.

core (geometry, features, backends, search, pose, verification, retrieval, localizer, mapping, ...)
imports nothing from evaluation, nodes or sim; evaluation imports neither the nodes nor ROS; only the
nodes (with the live evaluation) use rclpy and the ROS message packages. Imports inside functions count.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), f"{lint_imports} missing: import-linter is in requirements/base.in (make setup)"
    # The package under test is the checkout's, whatever else is on the path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [str(lint_imports), str(ROOT / "setup.cfg"), "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, f"import contracts broken (setup.cfg [importlinter]):\n{output}"


def _listed(contract: str, key: str) -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return set(parser[f"importlinter:contract:{contract}"][key].split())


def test_every_module_is_under_a_contract():
    """A new module or subpackage must be placed in the layers (a contract lists modules by name)."""
    package = ROOT / "vloc_ros"
    children = {f"vloc_ros.{path.stem}" for path in package.glob("*.py") if path.stem != "__init__"}
    children |= {f"vloc_ros.{path.parent.name}" for path in package.glob("*/__init__.py")}
    assert _listed("ros", "source_modules") == children - {"vloc_ros.nodes"}
    assert _listed("core", "source_modules") == children - {
        "vloc_ros.nodes",
        "vloc_ros.evaluation",
        "vloc_ros.sim",
        "vloc_ros.sequence_bag",  # writes its bags with sim's bag writer
        "vloc_ros.cli",
    }
