"""The Fast DDS profile the nodes ship (config/fastdds.xml) and the kernel limit it depends on.

The profile makes publishers in other processes send user data to the node by UDP, into a large
socket buffer, instead of by shared memory through their own 512 KB segment, which loses nearly
every raw image sent best effort (sensor-data QoS); config/fastdds.xml says why. ``use_shipped_profile``
points Fast DDS at it unless the user configures Fast DDS (or another RMW) already; a node's ``main``
calls it before ``rclpy.init``, since Fast DDS reads its profiles once, when the process creates its
first participant. The launch files apply it through ``profile_launch_actions``.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

PACKAGE = "vloc_ros"
PROFILE_FILE = "fastdds.xml"
# Fast DDS 3.x (Kilted on) reads the first, 2.x the second; rmw_fastrtps with 3.x still reads the
# second too, but warns at every start, so only the one the installed Fast DDS reads is set.
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")
# Set by a user who configures Fast DDS's transports: their choice stands. An empty value counts too,
# so `FASTDDS_DEFAULT_PROFILES_FILE= vloc_localizer` runs with Fast DDS's defaults.
USER_CONFIGURATION = (*PROFILE_VARIABLES, "FASTDDS_BUILTIN_TRANSPORTS")
# Fast DDS (3.x, 2.x) also loads this file from the working directory by itself.
WORKING_DIRECTORY_PROFILES = ("DEFAULT_FASTDDS_PROFILES.xml", "DEFAULT_FASTRTPS_PROFILES.xml")
FASTDDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")
DEFAULT_RMW = "rmw_fastrtps_cpp"
RMEM_MAX = Path("/proc/sys/net/core/rmem_max")


def shipped_profile() -> Path | None:
    """config/fastdds.xml: beside the sources in a checkout (also an editable install), else in the
    package's share directory (colcon, or a pip install's data_files); None when neither has it."""
    candidates = [Path(__file__).resolve().parents[2] / "config" / PROFILE_FILE]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / "config" / PROFILE_FILE)
    except (ImportError, LookupError):  # PackageNotFoundError is a KeyError
        pass
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / "config" / PROFILE_FILE)
    return next((path for path in candidates if path.is_file()), None)


def profile_setting(environ=os.environ) -> tuple[str, str] | None:
    """(variable, path) that points Fast DDS at the shipped profile; None when another RMW is selected,
    the user configures Fast DDS already, or the profile is not installed."""
    if (environ.get("RMW_IMPLEMENTATION") or DEFAULT_RMW) not in FASTDDS_RMWS:
        return None
    if any(name in environ for name in USER_CONFIGURATION) or any(map(os.path.isfile, WORKING_DIRECTORY_PROFILES)):
        return None
    profile = shipped_profile()
    return None if profile is None else (profile_variable(environ), str(profile))


def profile_launch_actions() -> list:
    """For a launch file: SetEnvironmentVariable for ``profile_setting`` (none when it is None), so the
    processes it starts use the shipped profile. launch is imported here only: nodes run without it."""
    from launch.actions import SetEnvironmentVariable

    setting = profile_setting()
    return [] if setting is None else [SetEnvironmentVariable(*setting)]


def use_shipped_profile(environ=os.environ) -> Path | None:
    """Applies ``profile_setting`` to ``environ``; returns the profile it set, else None."""
    setting = profile_setting(environ)
    if setting is None:
        return None
    environ[setting[0]] = setting[1]
    return Path(setting[1])


def profile_variable(environ=os.environ) -> str:
    """The variable naming the profile file for the installed Fast DDS (PyPI wheels: Kilted, 3.x)."""
    return PROFILE_VARIABLES[1] if environ.get("ROS_DISTRO") in FAST_DDS_2_DISTROS else PROFILE_VARIABLES[0]


def requested_receive_buffer(profile: Path) -> int:
    """The largest UDP receiveBufferSize the profile asks for (0: none, or the file does not parse)."""
    try:
        root = ET.parse(profile).getroot()
    except (OSError, ET.ParseError):
        return 0
    sizes = [
        int(e.text)
        for e in root.iter()
        if e.tag.rsplit("}", 1)[-1] == "receiveBufferSize" and (e.text or "").strip().isdigit()
    ]
    return max(sizes, default=0)


def receive_buffer_warning(environ=os.environ, rmem_max_file: Path = RMEM_MAX) -> str | None:
    """Why large images may still be lost, when the profile in use asks for a larger UDP receive buffer
    than the kernel grants (net.core.rmem_max caps it silently); None when they fit."""
    profile = environ.get(PROFILE_VARIABLES[0]) or environ.get(PROFILE_VARIABLES[1])
    if not profile:
        return None
    requested = requested_receive_buffer(Path(profile))
    try:
        rmem_max = int(rmem_max_file.read_text())
    except (OSError, ValueError):
        return None
    if rmem_max >= requested:
        return None
    return (
        f"net.core.rmem_max is {rmem_max} bytes, less than the {requested}-byte UDP receive buffer that "
        f"{profile} asks for: large images from other processes may be lost. Raise it with "
        f"`sudo sysctl -w net.core.rmem_max={requested}` (and in /etc/sysctl.d to keep it)."
    )
