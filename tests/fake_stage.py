"""A stand-in for the `sumrl` command in the param-precision tests: it writes the outputs the stage table
names for the job it is asked to run, and computes nothing.

    fake_stage.py <sumrl arguments>      e.g. `rl --method ppo --seed 0`

Each output gets the job's name and a fresh nonce, so that a rerun job changes its outputs (as a real
retraining does) and DVC passes the change on downstream. Curves are small CSVs with a step column and the
report's figure folder holds tiny PNGs, so that `dvc plots show` and `snakemake --report` can read them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sumrl.params import load_params
from sumrl.stages import TOP_PLOTS, expand

# A 1x1 PNG.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def main(argv: list[str]) -> None:
    params = load_params("params.yaml", check_files=False)
    cmd = " ".join(["sumrl", *argv])
    (job,) = [j for j in expand(params) if j.cmd == cmd]
    stamp = f"{job.name} {time.time_ns()}\n"
    for out in (*job.outs, *job.metrics, *job.plots):
        path = Path(out)
        if path.suffix == ".csv":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"step,loss,accuracy,nonce\n1,0.7,0.5,{time.time_ns()}\n2,0.6,0.6,{time.time_ns()}\n")
        elif path.suffix:  # a file; the stage table's folders have no suffix
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(stamp)
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "written_by.txt").write_text(stamp)
            for figure in (p for p in TOP_PLOTS if isinstance(p, str) and Path(p).parent == path):
                Path(figure).write_bytes(PNG + stamp.encode())


if __name__ == "__main__":
    main(sys.argv[1:])
