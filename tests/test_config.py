"""The typed configs (src/sumrl/config.py) mirror the schema, and build from params as the stages use them."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from sumrl.config import Config, LoraSettings, RLConfig, from_mapping
from sumrl.params import load_params, load_schema

from conftest import ROOT


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_rl_config_has_a_field_per_schema_key():
    schema = load_schema()["properties"]["rl"]["properties"]
    assert _fields(RLConfig) == set(schema)
    cfg = RLConfig.from_params(load_params(ROOT / "params.yaml", check_files=False))
    for name in ("reinforce", "rloo", "ppo", "kl_control"):
        assert _fields(type(getattr(cfg, name))) == set(schema[name]["properties"]), name
    assert _fields(LoraSettings) == set(load_schema()["$defs"]["lora"]["properties"])


def test_rl_config_from_params_is_typed_and_frozen():
    params = load_params(ROOT / "params.yaml", check_files=False, overrides=["rl.ppo.gamma=0.9"])
    cfg = RLConfig.from_params(params)
    assert cfg.ppo.gamma == 0.9 and cfg.kl_control.kind == params["rl"]["kl_control"]["kind"]
    assert cfg.lora.target_modules == tuple(params["rl"]["lora"]["target_modules"])
    assert cfg.as_dict()["ppo"] == params["rl"]["ppo"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.kl_coef = 1.0  # type: ignore[misc]
    assert cfg.replace(kl_coef=1.0).kl_coef == 1.0 and cfg.kl_coef == params["rl"]["kl_coef"]


def test_a_key_the_config_does_not_know_is_an_error():
    with pytest.raises(KeyError, match="LoraSettings"):
        from_mapping(LoraSettings, {"r": 1, "alpha": 2, "dropout": 0.0, "target_modules": ["q"], "rank": 3})


def test_config_has_a_dataclass_per_schema_section_field_for_field():
    """Every section and nested section of the schema is a dataclass with exactly its keys."""
    schema = load_schema()

    def check(cls, node, where):
        node = {**schema["$defs"][node["$ref"].rsplit("/", 1)[-1]], **node} if "$ref" in node else node
        assert _fields(cls) == set(node["properties"]), where
        hints = typing.get_type_hints(cls)
        for name, child in node["properties"].items():
            kind = hints[name]
            item = (typing.get_args(kind) or (None,))[0]
            if dataclasses.is_dataclass(kind):
                check(kind, child, f"{where}.{name}")
            elif dataclasses.is_dataclass(item):
                check(item, child["items"], f"{where}.{name}[]")

    check(Config, schema, "params")


def test_config_of_a_params_mapping_and_of_a_config():
    params = load_params(ROOT / "params.yaml", check_files=False)
    cfg = Config.of(params)
    assert Config.of(cfg) is cfg
    assert json.loads(json.dumps(cfg.as_dict())) == params  # the same params, lists back from tuples
    assert cfg.reward.num_labels == 1 and cfg.data.fields.document == params["data"]["fields"]["document"]
