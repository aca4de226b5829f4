"""Localize a camera against a map: the vloc_localizer node, optionally with rviz2.

    ros2 launch vloc_ros localize.launch.py map:=/path/to/map [camera:=/front_camera] [rviz:=true] [lifecycle:=true]

Parameters come from params_file (default: the installed config/localizer.yaml); ``map`` and
``camera`` override map_path and the camera topics (<camera>/image_raw, <camera>/camera_info)
when given. ``lifecycle:=true`` starts the managed node (vloc_localizer_lifecycle) under the same
name and parameters instead: it waits, unconfigured, for a lifecycle manager (Nav2's, listing
vloc_localizer in its node_names) or `ros2 lifecycle set` to configure and activate it.
The processes it starts use the installed config/fastdds.xml unless the environment configures Fast
DDS already.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vloc_ros.nodes.dds import profile_launch_actions

PACKAGE = "vloc_ros"
# The executable per `lifecycle`, both under the name vloc_localizer, so that params_file's section and a
# lifecycle manager's node_names fit either.
EXECUTABLES = {False: "vloc_localizer", True: "vloc_localizer_lifecycle"}


def localizer(context):
    overrides = {}
    map_path = LaunchConfiguration("map").perform(context)
    if map_path:
        overrides["map_path"] = map_path
    camera = LaunchConfiguration("camera").perform(context).rstrip("/")
    if camera:
        overrides["image_topic"] = f"{camera}/image_raw"
        overrides["camera_info_topic"] = f"{camera}/camera_info"
    lifecycle = IfCondition(LaunchConfiguration("lifecycle")).evaluate(context)
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLES[lifecycle],
            name="vloc_localizer",
            output="screen",
            parameters=[LaunchConfiguration("params_file"), overrides],
        )
    ]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            *profile_launch_actions(),
            DeclareLaunchArgument("map", default_value="", description="map directory (overrides map_path)"),
            DeclareLaunchArgument(
                "camera",
                default_value="",
                description="camera namespace, e.g. /camera: subscribes <camera>/image_raw and "
                "<camera>/camera_info (default: the topics in params_file)",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share, "config", "localizer.yaml"),
                description="vloc_localizer parameters",
            ),
            DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/vloc.rviz"),
            DeclareLaunchArgument(
                "lifecycle",
                default_value="false",
                description="start the managed (lifecycle) node, for Nav2's lifecycle manager, instead of the "
                "plain one, which localizes as soon as it starts",
            ),
            OpaqueFunction(function=localizer),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                output="log",
                arguments=["-d", os.path.join(share, "config", "vloc.rviz")],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
