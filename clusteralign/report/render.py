"""The two renderers of the report's page model: self-contained HTML (figures inlined) and Markdown.

Both walk the same blocks in the same order (`Section.blocks()`: ("h3", text), ("p", text),
("table", Table) or ("figure", PlacedFigure)), so the two files always say the same.
"""

from __future__ import annotations

import base64
import html
import os
import re
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from .prose import INTRO, PlacedFigure
from .tables import Table


class Section(Protocol):
    """One experiment's part of the page."""

    name: str
    slug: str

    def blocks(self) -> Iterable[tuple[str, Any]]: ...


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}
h2{margin-top:2em;border-bottom:1px solid #ccc;padding-bottom:.15em}
h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0 1em}
th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.pos{color:#11702b;background:#e6f4ea;font-weight:600}
td.neg{color:#b3261e;background:#fce8e6;font-weight:600}
figure{margin:1em 0}
figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555}
.notes li{margin:.3em 0}
nav ul{columns:2}
""".strip()


def slug(name: str, taken: set[str]) -> str:
    base = "exp-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "x")
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in table.header)
    body = []
    for row in table.rows:
        cells = []
        for i, c in enumerate(row):
            classes = (["num"] if i >= table.numeric_from else []) + ([c.tone] if c.tone else [])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{_esc(c.text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _html_figure(fig: PlacedFigure) -> str:
    data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(fig.caption)}">'
            f"<figcaption>{_esc(fig.caption)}</figcaption></figure>")


def _md(text: Any) -> str:
    """Escape text for Markdown (and keep it on one line, for table cells)."""
    text = re.sub(r"\s*\n\s*", " ", str(text))
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", text)


def _md_table(table: Table) -> str:
    lines = ["| " + " | ".join(_md(h) for h in table.header) + " |",
             "|" + "|".join("---:" if i >= table.numeric_from else "---" for i in range(len(table.header))) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join(_md(c.text) for c in row) + " |")
    return "\n".join(lines)


def _md_figure(fig: PlacedFigure, md_dir: Path) -> str:
    rel = Path(os.path.relpath(os.path.abspath(fig.path), os.path.abspath(md_dir))).as_posix()
    return f"![{_md(fig.caption)}]({urllib.parse.quote(rel)})\n\n*{_md(fig.caption)}*"


def render_html(title: str, summary: Table, verdicts: list[str], notes: tuple[str, ...],
                 sections: list[Section]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title>", f"<style>\n{_CSS}\n</style>", "</head>", "<body>",
           f"<h1>{_esc(title)}</h1>", f"<p>{_esc(INTRO)}</p>", "<h2>Summary</h2>", _html_table(summary),
           *(f"<p>{_esc(v)}</p>" for v in verdicts),
           "<h2>How to read this report</h2>", '<ul class="notes">',
           *(f"<li>{_esc(note)}</li>" for note in notes), "</ul>"]
    if sections:
        out += ["<nav><h2>Experiments</h2><ul>",
                *(f'<li><a href="#{s.slug}">{_esc(s.name)}</a></li>' for s in sections), "</ul></nav>"]
    for section in sections:
        out.append(f'<section id="{section.slug}">')
        out.append(f"<h2>Experiment {_esc(section.name)}</h2>")
        for kind, block in section.blocks():
            if kind == "h3":
                out.append(f"<h3>{_esc(block)}</h3>")
            elif kind == "p":
                out.append(f"<p>{_esc(block)}</p>")
            elif kind == "table":
                out.append(_html_table(block))
            else:
                out.append(_html_figure(block))
        out.append("</section>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def render_markdown(
    title: str, summary: Table, verdicts: list[str], notes: tuple[str, ...], sections: list[Section], md_dir: Path
) -> str:
    out = [f"# {_md(title)}", "", _md(INTRO), "", "## Summary", "", _md_table(summary), ""]
    out += [line for v in verdicts for line in (_md(v), "")]
    out += ["## How to read this report", ""]
    out += [f"- {_md(note)}" for note in notes]
    for section in sections:
        out += ["", f"## Experiment {_md(section.name)}"]
        for kind, block in section.blocks():
            out.append("")
            if kind == "h3":
                out.append(f"### {_md(block)}")
            elif kind == "p":
                out.append(_md(block))
            elif kind == "table":
                out.append(_md_table(block))
            else:
                out.append(_md_figure(block, md_dir))
    return "\n".join(out) + "\n"
