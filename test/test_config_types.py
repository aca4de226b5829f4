"""Typed configuration: every stage's dataclass refuses unknown keys, and the user-facing surface
(config/*.yaml, the nodes' parameter tables) maps onto settings that exist, with the defaults of the
dataclasses. That the YAML files and launch files name only declared parameters is test_launch_files.py's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vloc_ros.backends import BackendOptions
from vloc_ros.features import create_extractor
from vloc_ros.config import from_dict, nested_dict, to_dict
from vloc_ros.localizer import LocalizerConfig
from vloc_ros.mapping.builder import BuildConfig
from vloc_ros.nodes import localizer_node, map_builder_node
from vloc_ros.pose import PoseConfig
from vloc_ros.search import SearchConfig, SearchMode
from vloc_ros.tracking import TrackingConfig
from vloc_ros.verification import MotionGateConfig, VerificationConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_TYPES = (
    SearchConfig,
    PoseConfig,
    VerificationConfig,
    MotionGateConfig,
    TrackingConfig,
    LocalizerConfig,
    BuildConfig,
    BackendOptions,
)
# (parameter file, node module, its parameters -> config fields, the config type)
NODES = [
    ("localizer.yaml", localizer_node, localizer_node.LOCALIZER_CONFIG_PARAMETERS, LocalizerConfig),
    ("localizer.yaml", localizer_node, localizer_node.TRACKING_CONFIG_PARAMETERS, TrackingConfig),
    ("map_builder.yaml", map_builder_node, map_builder_node.BUILD_CONFIG_PARAMETERS, BuildConfig),
]


@pytest.mark.parametrize("config_type", CONFIG_TYPES)
def test_unknown_key_is_refused_with_the_valid_ones(config_type):
    valid = list(to_dict(config_type()))
    with pytest.raises(ValueError, match=r"unknown \w+ key\(s\) \['no_such_key'\]") as refused:
        from_dict(config_type, {"no_such_key": 1})
    assert str(valid) in str(refused.value)


@pytest.mark.parametrize("config_type", CONFIG_TYPES)
def test_defaults_round_trip_through_plain_json(config_type):
    plain = json.loads(json.dumps(to_dict(config_type())))
    assert from_dict(config_type, plain) == config_type()
    assert from_dict(config_type, None) == config_type()


def test_nested_sections_merge_and_enums_convert():
    config = from_dict(LocalizerConfig, {"search": {"mode": "local_only"}, "inference": {"backend": "torch_cpu"}})
    assert config.search.mode is SearchMode.LOCAL_ONLY and config.search.threads == SearchConfig().threads
    assert config.inference == {"backend": "torch_cpu", "max_keypoints": 1024}
    assert to_dict(config)["search"]["mode"] == "local_only"
    with pytest.raises(ValueError, match=r"unknown SearchConfig key\(s\) \['modes'\]"):
        from_dict(LocalizerConfig, {"search": {"modes": "parallel"}})
    with pytest.raises(ValueError, match="must be one of"):
        from_dict(SearchConfig, {"mode": "both"})
    # Naming another extractor replaces the default's options whole: none of xfeat's leak into aliked.
    assert from_dict(BuildConfig, {"extractor": {"name": "aliked"}}).extractor == {"name": "aliked"}


def config_value(config_type, path: str):
    """The default at a dotted ``path`` of ``config_type``; KeyError when there is no such field."""
    value = to_dict(config_type())
    for key in path.split("."):
        value = value[key]
    return value


@pytest.mark.parametrize(
    ("params_file", "node_module", "config_parameters", "config_type"),
    NODES,
    ids=lambda v: getattr(v, "__name__", None),
)
def test_parameters_that_configure_a_stage_map_onto_its_fields_with_its_defaults(
    params_file, node_module, config_parameters, config_type
):
    specs = {spec.name: spec for spec in node_module.PARAMETERS}
    yaml_parameters = yaml.safe_load((ROOT / "config" / params_file).read_text())
    (parameters,) = [section["ros__parameters"] for section in yaml_parameters.values()]
    # That every YAML key (and every parameter a launch file sets) is one the node declares is
    # test_launch_files.py's check, against a live node.
    for name, path in config_parameters.items():
        default = config_value(config_type, path)
        assert specs[name].default == default, (name, path)
        assert parameters.get(name, default) == default, (params_file, name)
    # The flat parameters give a config the typed one accepts.
    defaults = nested_dict({path: specs[name].default for name, path in config_parameters.items()})
    assert from_dict(config_type, defaults) == config_type()


def test_search_mode_parameter_offers_exactly_the_modes():
    (spec,) = [spec for spec in localizer_node.PARAMETERS if spec.name == "search_mode"]
    assert spec.choices == tuple(mode.value for mode in SearchMode)


def test_shipped_build_configs_are_build_configs():
    """``vloc build-map --config config/build_*.yaml``: each file gives a BuildConfig whose extractor
    options the extractor knows."""
    paths = sorted((ROOT / "config").glob("build_*.yaml"))
    assert paths
    for path in paths:
        config = from_dict(BuildConfig, yaml.safe_load(path.read_text()))
        assert create_extractor(config.extractor).name == config.extractor["name"]
