"""The Fast DDS profile the nodes apply (vloc_ros/nodes/dds.py, config/fastdds.xml).

That it delivers large images across processes is tested on a real graph by test_hostile_input.py
(an 875 KB image bomb from another process reaches the node) and measured by bench/bench_soak.py.
"""

from __future__ import annotations

from pathlib import Path

from vloc_ros.nodes import dds

REPO_PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds.xml"


def test_profile_is_applied_by_default():
    environ = {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}
    assert dds.use_shipped_profile(environ) == REPO_PROFILE
    assert environ == {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp", "FASTDDS_DEFAULT_PROFILES_FILE": str(REPO_PROFILE)}
    environ = {"ROS_DISTRO": "jazzy"}  # Fast DDS 2.x reads the older variable
    assert dds.use_shipped_profile(environ) == REPO_PROFILE
    assert environ["FASTRTPS_DEFAULT_PROFILES_FILE"] == str(REPO_PROFILE)


def test_a_users_configuration_stands():
    for environ in (
        {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"},
        {"FASTDDS_DEFAULT_PROFILES_FILE": ""},
        {"FASTRTPS_DEFAULT_PROFILES_FILE": "/robot/dds.xml"},
        {"FASTDDS_BUILTIN_TRANSPORTS": "SHM"},
    ):
        before = dict(environ)
        assert dds.use_shipped_profile(environ) is None
        assert environ == before


def test_receive_buffer_warning(tmp_path):
    assert dds.requested_receive_buffer(REPO_PROFILE) == 4 * 1024 * 1024
    environ = {"FASTDDS_DEFAULT_PROFILES_FILE": str(REPO_PROFILE)}
    rmem_max = tmp_path / "rmem_max"
    rmem_max.write_text("212992\n")
    warning = dds.receive_buffer_warning(environ, rmem_max)
    assert "net.core.rmem_max is 212992" in warning and "sysctl -w net.core.rmem_max=4194304" in warning
    rmem_max.write_text("4194304\n")
    assert dds.receive_buffer_warning(environ, rmem_max) is None
    assert dds.receive_buffer_warning({}, rmem_max) is None
