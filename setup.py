"""ament_python package: installable with colcon (ros2_ws/) or pip (`pip install -e .`)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vloc_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "ros2_ws", "ros2_ws.*", "bench", "scripts"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.py"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml"))),
    ],
    install_requires=["setuptools"],
    # `vloc build-map --ray`: feature extraction and matching on a Ray cluster (requirements/ray.in).
    extras_require={"ray": ["ray"]},
    zip_safe=True,
    maintainer="vloc_ros maintainers",
    maintainer_email="vloc-ros@example.com",
    description="Real-time visual localization with local and global descriptors searched in parallel, "
    "with ROS 2 nodes",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "vloc = vloc_ros.cli:main",
            "vloc_localizer = vloc_ros.nodes.localizer_node:main",
            "vloc_localizer_lifecycle = vloc_ros.nodes.localizer_lifecycle_node:main",
            "vloc_map_builder = vloc_ros.nodes.map_builder_node:main",
        ],
    },
)
