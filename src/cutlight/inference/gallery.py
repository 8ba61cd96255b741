"""A static HTML gallery of translations: ``index.html``, ``page2.html``, ... (plain HTML and CSS, no JavaScript).

Each row shows an input and its translation, scaled down by CSS, each linking to the full-size file. Links are
relative to the page, so the output folder can be browsed locally or served as it is (inputs are linked where
they are: keep the input folder at the same relative place). No thumbnail files are written, so the output
folder holds only translations (an FID over it counts nothing else). Formats browsers do not show (TIFF) appear
as text links.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from .evaluation import kid_text

_SHOWN = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")  # formats browsers display in <img>

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
td, th { padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
img { max-width: 256px; max-height: 256px; display: block; }
.name { font-size: 0.8em; color: #555; word-break: break-all; max-width: 256px; }
.metrics td, .info td { font-family: ui-monospace, monospace; }
nav { margin: 1em 0; }
nav a, nav span { margin-right: 0.6em; }
"""


def page_name(page: int) -> str:
    """File name of 1-based ``page``: ``index.html``, ``page2.html``, ..."""
    return "index.html" if page == 1 else f"page{page}.html"


def _href(target: Path, page_dir: Path) -> str:
    try:
        rel = os.path.relpath(Path(target).resolve(), page_dir.resolve())
    except ValueError:  # another drive (Windows): absolute file URI
        return Path(target).resolve().as_uri()
    return quote(Path(rel).as_posix())


def _cell(target: Path, page_dir: Path, label: str) -> str:
    href = html.escape(_href(target, page_dir), quote=True)
    if Path(target).suffix.lower() in _SHOWN:
        inner = f'<img src="{href}" alt="{html.escape(label, quote=True)}" loading="lazy">'
    else:
        inner = html.escape(Path(target).name)
    return f'<td><a href="{href}">{inner}</a><div class="name">{html.escape(label)}</div></td>'


def _label(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _nav(page: int, pages: int) -> str:
    if pages == 1:
        return ""
    parts = [f'<a href="{page_name(page - 1)}">&laquo; previous</a>'] if page > 1 else []
    parts += [f"<span>{i}</span>" if i == page else f'<a href="{page_name(i)}">{i}</a>' for i in range(1, pages + 1)]
    parts += [f'<a href="{page_name(page + 1)}">next &raquo;</a>'] if page < pages else []
    return "<nav>" + " ".join(parts) + "</nav>"


def _metrics_table(metrics: Mapping, real_dir: str | os.PathLike | None) -> str:
    rows = [("FID", f"{metrics['fid']:.4f}"),
            ("KID", kid_text(metrics).replace("+-", "&plusmn;")),
            ("images", f"{metrics['n_fake']} translated vs {metrics['n_real']} real"
                       + (f" ({html.escape(str(real_dir))})" if real_dir else ""))]
    rows += [("caveat", html.escape(note)) for note in metrics.get("warnings", [])]
    if "antialias" in metrics:
        rows.append(("resize", "antialiased" if metrics["antialias"] else "original FID (non-antialiased)"))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="metrics">{body}</table>'


def write_gallery(
    output_dir: str | os.PathLike,
    pairs: Sequence[tuple[Path, Path]],
    title: str = "translations",
    info: Mapping[str, str] | None = None,
    metrics: Mapping | None = None,
    real_dir: str | os.PathLike | None = None,
    per_page: int = 50,
) -> list[Path]:
    """Write the gallery pages into ``output_dir``; returns their paths (``index.html`` first).

    Args:
        pairs: ``(input file, translated file)`` rows, in display order.
        info: key / value lines shown at the top (checkpoint, settings).
        metrics: ``cutlight.inference.evaluate_folders`` result shown at the top of every page.
        per_page: rows per page (>= 1).
    """
    if per_page < 1:
        raise ValueError(f"per_page must be >= 1, got {per_page}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pages = max(1, math.ceil(len(pairs) / per_page))
    head = f"<h1>{html.escape(title)}</h1>"
    if metrics:
        head += _metrics_table(metrics, real_dir)
    if info:
        head += '<table class="info">' + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in info.items()) + "</table>"
    written = []
    for page in range(1, pages + 1):
        chunk = pairs[(page - 1) * per_page: page * per_page]
        first = (page - 1) * per_page
        rows = "".join(
            f"<tr><td>{first + i + 1}</td>{_cell(src, out, str(src))}{_cell(dst, out, _label(dst, out))}</tr>"
            for i, (src, dst) in enumerate(chunk))
        nav = _nav(page, pages)
        body = (f"{head}<p>{len(pairs)} image(s); page {page} of {pages}</p>{nav}"
                f"<table><tr><th>#</th><th>input</th><th>translation</th></tr>{rows}</table>{nav}")
        doc = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
               f"</title><style>{_STYLE}</style></head>\n<body>{body}</body></html>\n")
        path = out / page_name(page)
        path.write_text(doc, encoding="utf-8")
        written.append(path)
    return written
