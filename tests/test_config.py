"""The typed configs (src/sumrl/config.py) mirror the schema, and build from params as the stages use them."""

from __future__ import annotations

import dataclasses

import pytest

from sumrl.config import LoraSettings, RLConfig, from_mapping
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
