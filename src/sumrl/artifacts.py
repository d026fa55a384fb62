"""Files on disk: atomic outputs, JSON/JSONL, and training curves DVC can plot.

Every stage writes its outputs through `atomic_path`, so a killed stage never leaves an output that
Snakemake or DVC would take as finished: the output appears, whole, by one rename.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path


class DataError(ValueError):
    """Bad input data; the message names the file, line and field."""


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces `final` in one rename.

    On an exception the temporary path is removed and `final` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    _remove(tmp)
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike):
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file written by sumrl (strict: any bad line is an error naming the line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {lineno}: not valid JSON: {exc.msg}") from None
    return rows


class CurveLogger:
    """Appends one CSV row per training step; DVC plots read CSV natively.

    The header is fixed by the first row; later rows may only use those columns, so a curve file
    never silently changes shape mid-run. A resumed run appends to the file it finds.

    With `live_dir`, every row is mirrored to dvclive (numeric cells, at the row's step), whose metrics.json
    (the last values) is what `dvc exp show` lists; the CSV stays the one source: a resumed run rebuilds the
    dvclive folder from the CSV rows it keeps.
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False, live_dir: str | os.PathLike | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns: list[str] | None = None
        self.live_dir = None if live_dir is None else Path(live_dir)
        self.live = None
        if resume and self.path.is_file() and self.path.stat().st_size:
            with open(self.path, newline="") as fh:
                self.columns = next(csv.reader(fh))
        elif self.path.exists():
            self.path.unlink()
        self._restart_live()

    def _restart_live(self) -> None:
        """A fresh dvclive folder holding the rows the CSV has now."""
        if self.live_dir is None:
            return
        from dvclive import Live

        shutil.rmtree(self.live_dir, ignore_errors=True)
        # No dvc.yaml edits and no experiment commits from inside a stage: dvc.yaml declares the outputs.
        self.live = Live(dir=str(self.live_dir), save_dvc_exp=False, dvcyaml=None, report=None)
        if self.columns is not None:
            with open(self.path, newline="") as fh:
                for row in csv.DictReader(fh):
                    self._mirror(row)

    def _mirror(self, row: dict) -> None:
        if self.live is None:
            return
        numbers = {k: _number(v) for k, v in row.items() if k != "step"}
        self.live.step = int(float(row["step"]))
        for key, value in numbers.items():
            if value is not None:
                self.live.log_metric(key, value)
        self.live.make_summary()

    def log(self, row: dict) -> None:
        if self.columns is None:
            self.columns = list(row)
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)
        extra = set(row) - set(self.columns)
        if extra:
            raise ValueError(f"{self.path}: columns {sorted(extra)} not in header {self.columns}")
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([_fmt(row.get(c, "")) for c in self.columns])
        self._mirror(row)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (a resumed run replays them)."""
        if not self.path.is_file():
            return
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        header, body = rows[0], rows[1:]
        keep = [r for r in body if int(float(r[header.index("step")])) <= step]
        with open(self.path, "w", newline="") as fh:
            csv.writer(fh).writerows([header, *keep])
        self._restart_live()


def _number(value) -> float | None:
    """A curve cell as a number, or None for an empty or non-numeric cell (a method's column it leaves empty)."""
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
