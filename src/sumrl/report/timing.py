"""Where the time went: the per-job wall time and peak memory that Snakemake's `benchmark:` directives record
(logs/benchmarks/<job>.tsv). A DVC run records none, and then the report says so instead of a table."""

from __future__ import annotations

import csv
from pathlib import Path

from sumrl.report.document import Block, Heading, Paragraph, Table

BENCHMARKS = Path("logs/benchmarks")


def read_benchmarks(folder: Path = BENCHMARKS) -> list[tuple[str, float, float | None]]:
    """(job, seconds, peak RSS in MB) per benchmark file, longest first. A resumed job keeps its last attempt."""
    out = []
    for path in sorted(folder.rglob("*.tsv")) if folder.is_dir() else []:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if not rows:
            continue
        last = rows[-1]
        rss = last.get("max_rss", "")
        job = str(path.relative_to(folder).with_suffix(""))
        out.append((job, float(last["s"]), float(rss) if rss not in ("", "-", "NA") else None))
    return sorted(out, key=lambda r: -r[1])


def timing_section(rows: list[tuple[str, float, float | None]]) -> list[Block]:
    head = Heading("Where the time went")
    if not rows:
        return [head, Paragraph(f"No Snakemake benchmark files in {BENCHMARKS}/ (a DVC run, or a partial one).")]
    total = sum(seconds for _, seconds, _ in rows)
    table = tuple((job, f"{seconds / 60:.1f}", f"{100 * seconds / total:.0f}%",
                   "" if rss is None else f"{rss / 1024:.2f}") for job, seconds, rss in rows)
    return [head,
            Paragraph(f"Wall time of each job of the last Snakemake run on this machine ({BENCHMARKS}/), "
                      f"{total / 60:.1f} min in all, summed over jobs (jobs that ran in parallel overlap)."),
            Table(("Job", "Minutes", "Share", "Peak RSS (GB)"), table)]
