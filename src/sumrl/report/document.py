"""The report as a list of blocks, rendered twice: Markdown (report.md) and self-contained HTML (index.html).

Sections are built once from the evaluation outputs, so the two files can never disagree. Paragraph text
may mark names as `code`; table cells and quotes are plain text and are escaped by each renderer.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Quote:
    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    css_class: str = ""


@dataclass(frozen=True)
class Image:
    path: str  # relative to the reports folder, e.g. plots/reward_vs_kl.png
    alt: str


Block = Heading | Paragraph | Quote | Table | Image

CODE_SPAN = re.compile(r"`([^`]+)`")
MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


# ---- Markdown --------------------------------------------------------------------------------------

def md_escape(text: str) -> str:
    return MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def to_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"


def _md_block(block: Block) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + md_escape(block.text)
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Quote):
        return "> " + md_escape(block.text)
    if isinstance(block, Table):
        lines = [_md_row(block.header), "|" + "---|" * len(block.header)]
        return "\n".join(lines + [_md_row(r) for r in block.rows])
    if isinstance(block, Image):
        return f"![{block.alt}]({block.path})"
    raise TypeError(f"unknown block {block!r}")


def _md_row(cells) -> str:
    return "| " + " | ".join(md_escape(c) for c in cells) + " |"


# ---- HTML ------------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .1em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tbody tr:nth-child(even) { background: #fafafa; }
table.numbers td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
table.samples { width: 100%; }
table.samples td:nth-child(2) { width: 70%; }
blockquote { margin: 1em 0; padding: .5em 1em; background: #f6f8fa; border-left: 4px solid #bbb; }
code { background: #f0f0f0; padding: 0 .2em; border-radius: 3px; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .9em; }
"""


def to_html(blocks: list[Block], root: str | Path, title: str) -> str:
    """One HTML file with inline CSS and every image embedded as a data URI: no request leaves the page."""
    body = "\n".join(_html_block(b, Path(root)) for b in blocks)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def inline_markup(text: str) -> str:
    return CODE_SPAN.sub(r"<code>\1</code>", html.escape(text))


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_block(block: Block, root: Path) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{inline_markup(block.text)}</p>"
    if isinstance(block, Quote):
        return f"<blockquote>{html.escape(block.text)}</blockquote>"
    if isinstance(block, Table):
        cls = f' class="{block.css_class}"' if block.css_class else ""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in block.header)
        rows = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in block.rows)
        return f"<table{cls}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"
    if isinstance(block, Image):
        alt = html.escape(block.alt)
        return f'<figure><img src="{data_uri(root / block.path)}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'
    raise TypeError(f"unknown block {block!r}")
