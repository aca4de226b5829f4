"""Evaluation of localization against ground truth: a bag replayed through the localizer (bags read
by ``vloc_ros.bag_source``, ground truth interpolated by ``vloc_ros.geometry``), trajectory alignment,
metrics and a report with plots. Imports no ROS package: the live evaluation over ROS 2 is
``vloc_ros.nodes.live_evaluation`` (setup.cfg [importlinter] holds the layers)."""
