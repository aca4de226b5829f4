"""Record keyframes and build a map: the vloc_map_builder node, optionally with rviz2.

    ros2 launch vloc_ros build_map.launch.py map:=/path/to/new_map [camera:=/front_camera] \
        [pose_topic:=/ground_truth/pose] [rviz:=true]
    ros2 service call /vloc_map_builder/build std_srvs/srv/Trigger

Parameters come from params_file (default: the installed config/map_builder.yaml); ``map``,
``camera`` and ``pose_topic`` override output_map_path, the camera topics and pose_topic when given.
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


def map_builder(context):
    overrides = {}
    map_path = LaunchConfiguration("map").perform(context)
    if map_path:
        overrides["output_map_path"] = map_path
    camera = LaunchConfiguration("camera").perform(context).rstrip("/")
    if camera:
        overrides["image_topic"] = f"{camera}/image_raw"
        overrides["camera_info_topic"] = f"{camera}/camera_info"
    pose_topic = LaunchConfiguration("pose_topic").perform(context)
    if pose_topic:
        overrides["pose_topic"] = pose_topic
    return [
        Node(
            package=PACKAGE,
            executable="vloc_map_builder",
            name="vloc_map_builder",
            output="screen",
            parameters=[LaunchConfiguration("params_file"), overrides],
        )
    ]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            *profile_launch_actions(),
            DeclareLaunchArgument(
                "map", default_value="", description="where ~/build writes the map (overrides output_map_path)"
            ),
            DeclareLaunchArgument(
                "camera",
                default_value="",
                description="camera namespace, e.g. /camera: subscribes <camera>/image_raw and "
                "<camera>/camera_info (default: the topics in params_file)",
            ),
            DeclareLaunchArgument(
                "pose_topic", default_value="", description="known poses for a metric map (overrides pose_topic)"
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share, "config", "map_builder.yaml"),
                description="vloc_map_builder parameters",
            ),
            DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/vloc.rviz"),
            OpaqueFunction(function=map_builder),
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
