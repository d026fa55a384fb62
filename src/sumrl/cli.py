"""`sumrl <stage>`: one subcommand per workflow stage, plus helpers (validate, stages).

Every subcommand reads params.yaml (plus an optional preset and KEY=VALUE overrides), validates it
before anything heavy is imported or loaded, and then calls one function of the package.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from sumrl import stages
from sumrl.config import Config
from sumrl.params import ParamsError, check_environment, load_params

log = logging.getLogger("sumrl")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--preset", default=os.environ.get("SUMRL_PRESET"), help="a presets/*.yaml merged over params")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one param, e.g. --set rl.kl_coef=0.1 (repeatable)")


def _trained_stage(text: str) -> str:
    from sumrl.stages import trained_run

    try:
        trained_run(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sumrl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        _common(p)
        return p

    p = stage("validate", "check params (schema, cross-key rules, files) and exit")
    p.add_argument("--write", metavar="PATH",
                   help="also write the merged, validated params there "
                        "(DVC tracks only params.yaml: bake a preset into it)")
    stage("base-model", "materialize the base model as a Hugging Face folder")
    stage("prepare-data", "load, clean, filter and split the data; write the data card")
    stage("pairs", "build preference pairs (human pairs, or reference vs base-model sample)")
    for name, what in (("sft", "supervised fine-tuning (trl SFTTrainer + LoRA)"),
                       ("reward", "reward model (trl RewardTrainer; scalar or probabilistic head)")):
        p = stage(name, what)
        p.add_argument("--restart", action="store_true", help="ignore checkpoints and start clean")
    p = stage("consolidate",
              "turn a training run (plain or DeepSpeed ZeRO checkpoint, LoRA or full) into a verified HF folder")
    p.add_argument("--stage", required=True, type=_trained_stage, help="sft, reward, or an RL run <method>_s<seed>")
    stage("reward-eval", "score the reward model on its validation pairs and on reward.eval_pairs (accuracy, "
                         "shorter-side preference, length-balanced accuracy)")
    p = stage("rl", "RL fine-tuning of the SFT policy against the reward model")
    p.add_argument("--method", required=True, choices=stages.RL_METHODS)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--restart", action="store_true", help="ignore checkpoints and start clean")
    p = stage("generate", "batched generation on the test split for one policy")
    p.add_argument("--policy", required=True, help="base, sft or <method>_s<seed>")
    p = stage("evaluate", "ROUGE, reward, KL to SFT, length and EOS rate for one policy")
    p.add_argument("--policy", required=True)
    stage("judge", "LLM-judge win rate and G-Eval score of every policy (writes {enabled: false} unless judge.enabled)")
    stage("report", "reports/report.md, metrics.json and plots comparing all policies")
    p = sub.add_parser("params", help="the params reference (every key: accepts, default, purpose, what it reruns)")
    p.add_argument("--write", metavar="FILE", help="replace FILE's params reference section (README.md) instead")
    p = sub.add_parser("push", help="upload a consolidated policy and its model card to the Hugging Face hub "
                                    "(token from $HF_TOKEN)")
    p.add_argument("--policy", required=True, help="base, sft or <method>_s<seed>")
    p.add_argument("--repo-id", required=True, help="ORG/NAME on the hub")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--dry-run", action="store_true", help="list what would be sent; send nothing")
    p = sub.add_parser("stages", help="print the stage table, or write dvc.yaml from it")
    p.add_argument("--write-dvc", action="store_true", help="(re)write dvc.yaml")
    return parser


def _params_reference(args) -> int:
    from sumrl.params_doc import reference_markdown, write_reference

    if args.write:
        changed = write_reference(Path(args.write))
        print(f"{args.write}: params reference {'updated' if changed else 'already current'}")
    else:
        print(reference_markdown(), end="")
    return 0


def _push(args) -> int:
    from sumrl.push import PushError, push

    try:
        print(push(args.policy, args.repo_id, private=args.private, dry_run=args.dry_run))
    except (PushError, ValueError) as exc:
        print(f"sumrl push: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "stages":
        return _stages(args)
    if args.command == "params":
        return _params_reference(args)
    if args.command == "push":
        return _push(args)
    try:
        params = load_params(args.params, args.preset, args.overrides)
        if args.command in ("validate", "judge"):  # the environment matters only where it is used
            check_environment(params)
    except ParamsError as exc:
        print(f"sumrl: invalid params: {exc}", file=sys.stderr)
        return 2
    if args.command == "validate":
        if args.write:
            _write_params(params, Path(args.write))
        print(f"{args.params}: ok")
        return 0
    from sumrl.artifacts import DataError
    from sumrl.evaluate.judge import JudgeError  # no torch at import: bad params above still fail fast

    try:
        run_stage(args.command, params, args)
    except (DataError, FileNotFoundError, JudgeError) as exc:
        print(f"sumrl {args.command}: {exc}", file=sys.stderr)
        return 3
    finally:
        if "torch.distributed" in sys.modules:  # a stage that ran under a launcher joined a process group
            from sumrl.runtime import close_distributed

            close_distributed()
    return 0


def _write_params(params: dict, path: Path) -> None:
    import yaml

    from sumrl.artifacts import atomic_path

    with atomic_path(path) as tmp:  # may be params.yaml itself, read above: never leave it half-written
        tmp.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    print(f"wrote {path}")


def run_stage(command: str, params: dict, args: argparse.Namespace) -> None:
    """Import lazily: `sumrl validate` and bad params must fail fast, before torch is imported."""
    if command == "judge" and not Config.of(params).judge.enabled:
        # The disabled judge runs in every workflow run: it must cost a second, not a torch import.
        from sumrl.evaluate.judge import write_disabled

        return write_disabled()
    from sumrl import runtime

    runtime.redirect_caches(Path(".cache"))
    if command == "base-model":
        from sumrl.models.base import run
    elif command == "prepare-data":
        from sumrl.data.prepare import run
    elif command == "pairs":
        from sumrl.data.pairs import run
    elif command == "sft":
        from sumrl.train.sft import run
    elif command == "reward":
        from sumrl.train.reward import run
    elif command == "reward-eval":
        from sumrl.evaluate.reward_eval import run
    elif command == "consolidate":
        from sumrl.scale.consolidate import run
    elif command == "rl" and args.method == "dpo":
        from sumrl.train.dpo import run
    elif command == "rl":
        from sumrl.rl.loop import run
    elif command == "generate":
        from sumrl.evaluate.generate import run
    elif command == "evaluate":
        from sumrl.evaluate.metrics import run
    elif command == "judge":
        from sumrl.evaluate.judge import run
    elif command == "report":
        from sumrl.report import run
    else:  # pragma: no cover - argparse restricts the choices
        raise SystemExit(f"unknown command {command}")
    run(params, args)


def _stages(args: argparse.Namespace) -> int:
    if args.write_dvc:
        Path("dvc.yaml").write_text(stages.dvc_yaml())
        print("wrote dvc.yaml")
        return 0
    for st in stages.STAGES:
        print(f"{st.name:12s} {st.cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
