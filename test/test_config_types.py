"""Typed configuration: every stage's dataclass refuses unknown keys, and the user-facing surface
(config/*.yaml, the nodes' parameter tables, the launch files) names only settings that exist, with
the defaults of the dataclasses."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from vloc_ros.backends import BackendOptions
from vloc_ros.config import from_dict, nested_dict, to_dict
from vloc_ros.localizer import LocalizerConfig
from vloc_ros.mapping.builder import BuildConfig
from vloc_ros.nodes import localizer_node, map_builder_node
from vloc_ros.pose import PoseConfig
from vloc_ros.search import SearchConfig, SearchMode
from vloc_ros.verification import MotionGateConfig, VerificationConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_TYPES = (
    SearchConfig,
    PoseConfig,
    VerificationConfig,
    MotionGateConfig,
    LocalizerConfig,
    BuildConfig,
    BackendOptions,
)
# parameter file -> (node module, its parameters -> config fields, the config type)
NODES = {
    "localizer.yaml": (localizer_node, localizer_node.LOCALIZER_CONFIG_PARAMETERS, LocalizerConfig),
    "map_builder.yaml": (map_builder_node, map_builder_node.BUILD_CONFIG_PARAMETERS, BuildConfig),
}
LAUNCH_FILES = {"localize.launch.py": "localizer.yaml", "build_map.launch.py": "map_builder.yaml"}


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


def unknown_keys(parameters: dict, node_module) -> set[str]:
    return set(parameters) - {spec.name for spec in node_module.PARAMETERS}


@pytest.mark.parametrize("params_file", NODES)
def test_parameters_that_configure_a_stage_map_onto_its_fields_with_its_defaults(params_file):
    node_module, config_parameters, config_type = NODES[params_file]
    specs = {spec.name: spec for spec in node_module.PARAMETERS}
    yaml_parameters = yaml.safe_load((ROOT / "config" / params_file).read_text())
    (parameters,) = [section["ros__parameters"] for section in yaml_parameters.values()]
    # Every YAML key is a parameter of the node's table, so a typo in the file fails here.
    assert not unknown_keys(parameters, node_module), unknown_keys(parameters, node_module)
    assert unknown_keys({**parameters, "min_inlier": 30}, node_module) == {"min_inlier"}
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


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_launch_files_set_only_parameters_of_the_table(launch_file):
    """The launch files' overrides["name"] = ... name node parameters (launch_ros does not install here)."""
    node_module = NODES[LAUNCH_FILES[launch_file]][0]
    tree = ast.parse((ROOT / "launch" / launch_file).read_text())
    overridden = {
        node.slice.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript)
        and getattr(node.value, "id", None) == "overrides"
        and isinstance(node.slice, ast.Constant)
    }
    assert overridden and not unknown_keys(dict.fromkeys(overridden), node_module)
