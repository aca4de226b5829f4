"""Evaluation of localization against ground truth: bag replay input, time alignment of ground
truth, trajectory alignment, metrics and a report with plots. Imports no ROS package."""
