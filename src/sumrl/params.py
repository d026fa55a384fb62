"""Loading and validating params.yaml (and presets merged over it).

One schema (schema/params.schema.yaml) serves the CLI, the Snakefile and the tests. Errors name the key
and, for a misspelled key, suggest the nearest valid one. Checks that a JSON schema cannot express
(cross-key rules, files that must exist) live in `_check_semantics`, and everything here runs before
any model is loaded.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(str(resources.files("sumrl") / "schema" / "params.schema.yaml"))
BASE_MODEL_DIR = "models/base"  # the base-model stage's output (stages.BASE), whose config sets the context
# Tokens the instruction and the chat template add around a document, at most (prompts are cut to fit).
PROMPT_TEMPLATE_TOKENS = 64
# Keys that were removed, and what replaced them: named in the error instead of "unknown key".
REMOVED_KEYS = {"rl.reward_model": "removed: the RL stages use the reward model the reward stage trains, "
                                   "whose kind is reward.kind; delete the key"}


class ParamsError(ValueError):
    """A params file or override is invalid; the message names the file and key."""


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        # A stream, so that YAML's error marks name the file, not "<unicode string>".
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of params at the top level")
    return data


def deep_merge(base: dict, over: dict) -> dict:
    """`over` wins; mappings merge key by key, everything else (lists included) is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict:
    """`rl.kl_coef=0.1` -> {"rl": {"kl_coef": 0.1}} (the value is parsed as YAML)."""
    if "=" not in text:
        raise ParamsError(f"override {text!r}: expected KEY=VALUE, e.g. rl.kl_coef=0.1")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw)
    node: dict = {}
    cursor = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = value
    return node


def load_params(
    path: str | os.PathLike = "params.yaml",
    preset: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    check_files: bool = True,
) -> dict:
    """Read params.yaml, merge a preset and KEY=VALUE overrides over it, validate, return a dict."""
    params = read_yaml(path)
    source = str(path)
    if preset:
        params = deep_merge(params, read_yaml(preset))
        source += f" + {preset}"
    for text in overrides:
        params = deep_merge(params, parse_override(text))
    validate_params(params, source=source, check_files=check_files)
    return params


def validate_params(params: dict, source: str = "params", check_files: bool = True) -> None:
    import jsonschema  # here, not at import: the RL core imports this module on machines without jsonschema

    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        raise ParamsError(f"{source}: " + "\n".join(_explain(e, schema) for e in errors))
    _check_semantics(params, source, check_files)


def _explain(error, schema: dict) -> str:
    """One line per problem of a jsonschema.ValidationError, naming the key (and the nearest valid one)."""
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(_properties_at(schema, list(error.absolute_path)))
        unknown = sorted(set(error.instance) - set(allowed))
        lines = []
        for key in unknown:
            full = f"{where}.{key}" if error.absolute_path else key
            if full in REMOVED_KEYS:
                lines.append(f"{full}: {REMOVED_KEYS[full]}")
                continue
            near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            prefix = f"{where}." if error.absolute_path else ""
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else f"; valid keys here: {', '.join(allowed)}"
            lines.append(f"unknown key '{full}'{hint}")
        return "\n".join(lines)
    if error.validator == "required":
        return f"{where}: {error.message}"
    return f"{where}: {error.message} (got {error.instance!r})"


def _properties_at(schema: dict, path: list) -> set[str]:
    node = schema
    for part in path:
        node = _resolve(schema, node)
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    return set(_resolve(schema, node).get("properties", {}))


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["$defs"][name]
    return node


def _check_semantics(p: dict, source: str, check_files: bool) -> None:
    problems = []
    splits = p["data"]["splits"]
    if sum(splits.values()) > 1 + 1e-9:
        problems.append(f"data.splits: fractions sum to {sum(splits.values()):.3f}, must be <= 1")
    for name in ("sft", "pref", "rl"):
        if splits[name] <= 0:
            problems.append(f"data.splits.{name}: must be > 0 (got {splits[name]})")
    data = p["data"]
    if data["source"] in ("jsonl", "parquet", "hf") and not data["path"]:
        problems.append(f"data.path: required when data.source is '{data['source']}'")
    if check_files and data["source"] in ("jsonl", "parquet") and data["path"]:
        if not Path(data["path"]).exists():
            problems.append(f"data.path: file or folder not found: {data['path']}")
    pairs = p["pairs"]
    if pairs["source"] != "generated" and not pairs["path"]:
        problems.append(f"pairs.path: required when pairs.source is '{pairs['source']}'")
    if check_files and pairs["source"] in ("jsonl", "parquet") and pairs["path"]:
        if not Path(pairs["path"]).exists():
            problems.append(f"pairs.path: file or folder not found: {pairs['path']}")
    names = [spec["name"] for spec in p["reward"]["eval_pairs"]]
    for i, spec in enumerate(p["reward"]["eval_pairs"]):
        if check_files and spec["source"] != "hf" and not Path(spec["path"]).exists():
            problems.append(f"reward.eval_pairs[{i}].path: file or folder not found: {spec['path']}")
        if spec["name"] in names[:i] or spec["name"].startswith("validation"):
            problems.append(f"reward.eval_pairs[{i}].name: '{spec['name']}' is taken (names are unique, and "
                            "'validation*' names the reward model's own held-out pairs)")
    if data["min_summary_tokens"] > data["max_summary_tokens"]:
        problems.append("data.min_summary_tokens: larger than data.max_summary_tokens")
    problems += _rl_shape_problems(p["rl"], p["reward"]["kind"])
    compute = p["compute"]
    if compute["offload"] != "none" and compute["deepspeed"] == "none":
        problems.append(f"compute.offload: '{compute['offload']}' offloads ZeRO state, so it needs compute.deepspeed "
                        "zero2 or zero3 (got 'none')")
    if check_files:
        problems += context_problems(p, Path(BASE_MODEL_DIR))
    base = p["model"]["base"]
    if check_files and base.startswith(("./", "/", "../")) and not Path(base).exists():
        problems.append(f"model.base: local model folder not found: {base}")
    judge = p["judge"]
    if judge["enabled"] and judge["backend"] == "openai" and not judge["model"]:
        problems.append("judge.model: required when judge.backend is 'openai' (the model name the endpoint serves)")
    if problems:
        raise ParamsError(f"{source}: " + "\n".join(problems))


def _rl_shape_problems(rl: dict, reward_kind: str) -> list[str]:
    """Batch shapes the RL loop cannot split: a rollout is rollout_batch_size completions in groups of k (one
    prompt's samples, kept whole), cut into mini_batches, each run micro_batch_size completions at a time."""
    problems = []
    if rl["variance_regularized"] and reward_kind != "probabilistic":
        problems.append("rl.variance_regularized: needs reward.kind 'probabilistic' (sigma comes from it)")
    size = rl["rollout_batch_size"]
    for method in ("rloo", "grpo"):
        if method in rl["methods"] and size % rl[method]["k"]:
            problems.append(f"rl.rollout_batch_size: {size} completions do not split into groups of rl.{method}.k = "
                            f"{rl[method]['k']}")
            return problems
    if rl["total_episodes"] < size:
        problems.append("rl.total_episodes: smaller than one rollout (rl.rollout_batch_size)")
    for method in (m for m in rl["methods"] if m != "dpo"):  # dpo samples nothing: no rollout to split
        k = rl[method]["k"] if method in ("rloo", "grpo") else 1
        if (size // k) % rl["mini_batches"]:
            problems.append(f"rl.mini_batches: {size // k} groups of {k} completion(s) per rollout ({method}) do not "
                            f"split into {rl['mini_batches']} equal mini-batches")
            return problems
    mini = size // rl["mini_batches"]
    micro = rl["micro_batch_size"]
    if micro is not None and micro < mini and mini % micro:
        problems.append(f"rl.micro_batch_size: a mini-batch of {mini} completions does not split into micro-batches "
                        f"of {micro}")
    return problems


def context_problems(p: dict, base_dir: Path) -> list[str]:
    """Prompt plus completion beyond the base model's context: checked once models/base exists (`sumrl validate`
    and every stage's params load), since max_position_embeddings is read from its config.json."""
    config = base_dir / "config.json"
    if not config.is_file():
        return []
    window = json.loads(config.read_text()).get("max_position_embeddings")
    if not window:
        return []
    prompt = p["data"]["max_document_tokens"] + PROMPT_TEMPLATE_TOKENS
    completions = {"rl.max_new_tokens": p["rl"]["max_new_tokens"],
                   "generate.max_new_tokens": p["generate"]["max_new_tokens"],
                   "data.max_summary_tokens": p["data"]["max_summary_tokens"]}
    if p["pairs"]["source"] == "generated":
        completions["pairs.max_new_tokens"] = p["pairs"]["max_new_tokens"]
    return [f"{key}: {value} tokens after a prompt of up to {prompt} (data.max_document_tokens "
            f"{p['data']['max_document_tokens']} + {PROMPT_TEMPLATE_TOKENS} for the instruction and chat template) "
            f"exceed the base model's context of {window} tokens ({config})"
            for key, value in completions.items() if prompt + value > window]


def check_environment(p: dict, environ: Mapping[str, str] = os.environ) -> None:
    """Settings that live in the environment: the judge endpoint's URL.

    Checked by the judge stage, `sumrl validate` and the start of a real Snakemake run, not at every params
    load: a stage that never calls the judge must not fail because a shell lacks the judge's URL. The
    message names the variable, never its value (a URL may carry credentials).
    """
    judge = p["judge"]
    if not (judge["enabled"] and judge["backend"] == "openai"):
        return
    name = judge["url_env"]
    url = environ.get(name, "").strip()
    if not url:
        raise ParamsError(f"judge.url_env: environment variable {name} is not set; export it as the endpoint's "
                          "base URL (e.g. http://127.0.0.1:8000/v1), or set judge.backend: hf")
    if not url.startswith(("http://", "https://")):
        raise ParamsError(f"judge.url_env: {name} must be an http:// or https:// URL (e.g. http://127.0.0.1:8000/v1)")


def select(params: dict, keys: Iterable[str]) -> dict:
    """The values of dotted keys, e.g. select(p, ["rl.kl_coef"]) -> {"rl.kl_coef": 0.05}."""
    out = {}
    for key in keys:
        node: Any = params
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out
