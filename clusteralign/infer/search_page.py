"""The HTML page of `clusteralign search`: each query beside its top-K gallery images.

One self-contained file (thumbnails inlined as JPEG data), laid out like the report's retrieval
figures: the query framed blue, then its matches nearest first, each with its rank, distance and
file name (its path inside its folder in the tooltip).
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

from PIL import Image

from ..io import write_text
from .search import Matches

# Thumbnail (width, height): the report's retrieval cells.
THUMBNAIL = (64, 128)

_CSS = """
body { font-family: sans-serif; font-size: 13px; margin: 16px; color: #222; }
.row { display: flex; gap: 6px; margin: 10px 0; align-items: flex-start; }
.cell { width: 72px; text-align: center; font-size: 10px; overflow-wrap: anywhere; }
.cell img { display: block; width: 64px; height: 128px; border: 4px solid #999; }
.query img { border-color: #285ac8; }
.query { margin-right: 12px; }
"""


def _thumbnail(path: str, cache: dict[str, str]) -> str:
    """The image at `path` as a data URI of a small JPEG, encoded once per file."""
    if path not in cache:
        with Image.open(path) as image:
            small = image.convert("RGB").resize(THUMBNAIL, Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG", quality=85)
        cache[path] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return cache[path]


def _cell(src: str, name: str, caption: str, extra_class: str = "") -> str:
    shown = html.escape(Path(name).name)
    classes = f"cell {extra_class}" if extra_class else "cell"
    return (f'<div class="{classes}"><img src="{src}" alt="{shown}" title="{html.escape(name)}">'
            f"<div>{html.escape(caption)}</div><div>{shown}</div></div>")


def write_search_page(path: str | os.PathLike[str], matches: Matches, query_paths: list[str], query_names: list[str],
                      gallery_paths: list[str], gallery_names: list[str], title: str, max_queries: int) -> int:
    """Write the page for the first `max_queries` queries (0: all); returns how many it shows.

    `*_paths` are the files to read thumbnails from, `*_names` what the page calls them.
    """
    shown = len(query_paths) if max_queries == 0 else min(max_queries, len(query_paths))
    cache: dict[str, str] = {}
    rows = []
    for i in range(shown):
        cells = [_cell(_thumbnail(query_paths[i], cache), query_names[i], "query", "query")]
        for k in range(matches.top):
            j = int(matches.order[i, k])
            cells.append(_cell(_thumbnail(gallery_paths[j], cache), gallery_names[j],
                               f"#{k + 1}  d {matches.distance[i, k]:.3f}"))
        rows.append(f'<div class="row">{"".join(cells)}</div>')
    more = (f"<p>The first {shown} of {len(query_paths)} queries; the CSV lists all.</p>"
            if shown < len(query_paths) else "")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Each query (blue) with its {matches.top} nearest gallery images, nearest first; d is the "
            f"Euclidean distance between L2-normalised features (0 to 2).</p>{more}\n"
            + "\n".join(rows) + "\n</body></html>\n")
    write_text(path, page)
    return shown
