"""Launch files, parameter files and the rviz config agree with the nodes.

launch_ros does not install here (no wheels), so the launch files are checked statically: parsed,
every executable exists as a console script, every parameter they set and every key of the YAML
files is a parameter the node declares (with a value it accepts), every config file they name is
installed. Where launch_ros imports (a ROS 2 install) they are also launched for real.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import rclpy
import yaml

from vloc_ros.nodes.localizer_lifecycle_node import LifecycleLocalizerNode
from vloc_ros.nodes.localizer_node import LocalizerNode
from vloc_ros.nodes.map_builder_node import MapBuilderNode

ROOT = Path(__file__).resolve().parents[1]
# launch file -> ({executable: node class}, parameter file); the first executable is the default, and
# every one runs under the first's name (the parameter file's section).
LAUNCH_FILES = {
    "localize.launch.py": (
        {"vloc_localizer": LocalizerNode, "vloc_localizer_lifecycle": LifecycleLocalizerNode},
        "localizer.yaml",
    ),
    "build_map.launch.py": ({"vloc_map_builder": MapBuilderNode}, "map_builder.yaml"),
}
ROS_OWN_PARAMETERS = {"use_sim_time", "start_type_description_service"}


@pytest.fixture(scope="module")
def context():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture(scope="module")
def declared(context, tmp_path_factory):
    """executable -> {parameter: value} as each node declares them, with its default parameter file
    loaded the way `ros2 launch` loads it (--params-file), so every key and value must be accepted."""
    declared = {}
    buffer_dir = tmp_path_factory.mktemp("keyframes")  # not the YAML's ~/.ros default during tests
    for executables, params_file in LAUNCH_FILES.values():
        for executable, node_class in executables.items():
            node = node_class(
                context=context,
                cli_args=["--ros-args", "--params-file", str(ROOT / "config" / params_file)],
                parameter_overrides=[rclpy.parameter.Parameter("buffer_dir", value=str(buffer_dir))]
                if node_class is MapBuilderNode
                else [],
            )
            try:
                declared[executable] = {
                    name: node.get_parameter(name).value
                    for name in set(node.list_parameters([], 0).names) - ROS_OWN_PARAMETERS
                }
                declared[executable + ":publishers"] = {p.topic_name for p in node.publishers}
            finally:
                node.destroy_node()
    return declared


def calls(tree, name: str):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def constant_keywords(call, names: dict) -> dict:
    """The call's keyword arguments that are constants, or module-level names of constants; one given as
    an item of a module-level dict (``EXECUTABLES[lifecycle]``) is the tuple of the values it may take."""
    values = {}
    for keyword in call.keywords:
        if isinstance(keyword.value, ast.Constant):
            values[keyword.arg] = keyword.value.value
        elif isinstance(keyword.value, ast.Name) and keyword.value.id in names:
            values[keyword.arg] = names[keyword.value.id]
        elif isinstance(keyword.value, ast.Subscript) and getattr(keyword.value.value, "id", None) in names:
            values[keyword.arg] = tuple(names[keyword.value.value.id].values())
    return values


def module_constants(tree) -> dict:
    """Module-level names bound to literals (strings, dicts of them, ...)."""
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            constants.update({target.id: value for target in node.targets if isinstance(target, ast.Name)})
    return constants


def string_constants(tree) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_launch_file_matches_the_node(launch_file, declared):
    executables, params_file = LAUNCH_FILES[launch_file]
    name = next(iter(executables))
    tree = ast.parse((ROOT / "launch" / launch_file).read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)

    scripts = {
        ep.name for ep in importlib.metadata.distribution("vloc_ros").entry_points if ep.group == "console_scripts"
    }
    nodes = [constant_keywords(c, module_constants(tree)) for c in calls(tree, "Node")]
    ours = [n for n in nodes if n.get("package") == "vloc_ros"]
    [launched] = [n["executable"] for n in ours]
    assert (launched if isinstance(launched, tuple) else (launched,)) == tuple(executables)
    assert set(executables) <= scripts
    # The node name selects the parameter file's section, whichever executable runs.
    params_yaml = yaml.safe_load((ROOT / "config" / params_file).read_text())
    assert list(params_yaml) == [ours[0]["name"]] == [name]
    assert {n["executable"] for n in nodes if n.get("package") != "vloc_ros"} <= {"rviz2"}

    # Parameters the launch file sets: overrides["name"] = ...
    overridden = {
        n.slice.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Subscript)
        and getattr(n.value, "id", None) == "overrides"
        and isinstance(n.slice, ast.Constant)
    }
    for executable in executables:
        assert overridden and overridden <= set(declared[executable]), overridden - set(declared[executable])

    # Launch arguments: every LaunchConfiguration is declared.
    arguments = {c.args[0].value for c in calls(tree, "DeclareLaunchArgument")}
    used = {c.args[0].value for c in calls(tree, "LaunchConfiguration")}
    assert used <= arguments and {"map", "camera", "params_file", "rviz"} <= arguments

    # Config files it names exist and are installed (setup.py globs config/*.yaml and *.rviz).
    named = {s for s in string_constants(tree) if s.endswith((".yaml", ".rviz")) and " " not in s}
    assert named == {params_file, "vloc.rviz"}
    setup = (ROOT / "setup.py").read_text()
    assert 'glob("config/*.yaml")' in setup and 'glob("config/*.rviz")' in setup and 'glob("launch/*.py")' in setup
    for name in named:
        assert (ROOT / "config" / name).is_file()


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_parameter_file_is_complete_and_accepted(launch_file, declared):
    executables, params_file = LAUNCH_FILES[launch_file]
    values = yaml.safe_load((ROOT / "config" / params_file).read_text())[next(iter(executables))]["ros__parameters"]
    for executable in executables:
        assert set(values) == set(declared[executable]), f"YAML keys and {executable}'s parameters differ"
        for name, value in values.items():
            if name != "buffer_dir":  # overridden in the test
                assert declared[executable][name] == value, name


def test_rviz_config_shows_what_the_localizer_publishes(declared):
    config = yaml.safe_load((ROOT / "config" / "vloc.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    published = declared["vloc_localizer:publishers"] | {"/vloc_localizer/debug_image"}  # with publish_debug_image
    assert topics == {
        "/vloc_localizer/map_cloud",
        "/vloc_localizer/inliers",
        "/vloc_localizer/pose",
        "/vloc_localizer/debug_image",
    }
    assert topics <= published
    assert {d["Class"] for d in displays} >= {
        "rviz_default_plugins/TF",
        "rviz_default_plugins/PointCloud2",
        "rviz_default_plugins/Pose",
        "rviz_default_plugins/Image",
    }
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"
    map_cloud = next(d for d in displays if d.get("Topic", {}).get("Value") == "/vloc_localizer/map_cloud")
    assert map_cloud["Topic"]["Durability Policy"] == "Transient Local"  # ~/map_cloud is published once, latched


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_launch_for_real(launch_file, context, sim_map, tmp_path):
    """`ros2 launch` starts the node (needs launch_ros and vloc_ros installed with colcon)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    if importlib.util.find_spec("launch_ros") is None or shutil.which("ros2") is None:
        pytest.skip(
            "launch_ros / the ros2 CLI are not installed (no PyPI wheels); the launch files are checked "
            "statically above"
        )
    try:
        get_package_share_directory("vloc_ros")
    except PackageNotFoundError:
        pytest.skip("vloc_ros is not installed in an ament prefix (colcon build in ros2_ws, then source it)")
    executable = next(iter(LAUNCH_FILES[launch_file][0]))  # the default, under its own name
    map_argument = sim_map if launch_file == "localize.launch.py" else tmp_path / "new_map"
    process = subprocess.Popen(
        ["ros2", "launch", "vloc_ros", launch_file, f"map:={map_argument}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    observer = rclpy.create_node("vloc_launch_test_observer", context=context)
    try:
        deadline = time.monotonic() + 60.0
        while executable not in observer.get_node_names() and time.monotonic() < deadline:
            rclpy.spin_once(observer, timeout_sec=0.2)
        assert executable in observer.get_node_names(), f"{executable} did not come up"
        assert process.poll() is None
    finally:
        observer.destroy_node()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
