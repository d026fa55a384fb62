"""The schema documents every key, its defaults are params.yaml, and the README's reference is generated from it."""

from __future__ import annotations

from sumrl.params import read_yaml
from sumrl.params_doc import REFERENCE_MARKERS, leaves, reference_markdown, stages_reading
from sumrl.stages import PLACEMENT_ONLY

from conftest import ROOT


def test_every_key_has_a_description():
    missing = [key for key, node, _ in leaves() if not node.get("description", "").strip()]
    assert not missing, f"keys without a description in the schema: {missing}"


def test_schema_defaults_are_params_yaml():
    from sumrl.params_doc import schema_defaults

    assert schema_defaults() == read_yaml(ROOT / "params.yaml"), (
        "params.yaml and the schema's defaults differ: change both (src/sumrl/schema/params.schema.yaml)"
    )


def test_readme_reference_is_current():
    start, end = REFERENCE_MARKERS
    section = (ROOT / "README.md").read_text().split(start, 1)[1].split(end, 1)[0]
    assert section == "\n" + reference_markdown(), "README's params reference is stale: sumrl params --write README.md"


def test_reruns_column_follows_the_stage_table():
    assert stages_reading("rl.ppo.gamma") == ["rl"]
    assert stages_reading("rl.kl_coef") == ["rl"]
    assert stages_reading("rl.seeds") == ["report"]
    assert PLACEMENT_ONLY == ("compute.threads", "compute.launcher")
    assert all(stages_reading(key) == [] for key in PLACEMENT_ONLY)  # speed or placement: no stage's dependency
    assert stages_reading("reward.eval_pairs[].path") == ["reward_eval"]
    assert "reward" not in stages_reading("reward.eval_pairs")
    assert {"sft", "reward", "rl"} <= set(stages_reading("compute.deepspeed"))
