"""A stand-in for the `sumrl` command in the param-precision tests: it writes the outputs the stage table
names for the job it is asked to run, and computes nothing.

    fake_stage.py <sumrl arguments>      e.g. `rl --method ppo --seed 0`

Each output gets the job's name and a fresh nonce, so that a rerun job changes its outputs (as a real
retraining does) and DVC passes the change on downstream.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sumrl.params import load_params
from sumrl.stages import expand


def main(argv: list[str]) -> None:
    params = load_params("params.yaml", check_files=False)
    cmd = " ".join(["sumrl", *argv])
    (job,) = [j for j in expand(params) if j.cmd == cmd]
    stamp = f"{job.name} {time.time_ns()}\n"
    for out in (*job.outs, *job.metrics, *job.plots):
        path = Path(out)
        if path.suffix:  # a file; the stage table's folders have no suffix
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(stamp)
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "written_by.txt").write_text(stamp)


if __name__ == "__main__":
    main(sys.argv[1:])
