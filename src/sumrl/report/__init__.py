"""The report stage: Markdown, HTML, metrics.json and plots comparing every policy (see build.py)."""

from sumrl.report.build import run

__all__ = ["run"]
