"""A static HTML gallery of translations: ``index.html``, ``page2.html``, ... (plain HTML and CSS, no JavaScript).

Each row shows an input, its translation and, with real target images given (``--real``), one of them (the
i-th real image in sorted order beside the i-th input, as the reference implementation's test page does). The
translations are linked relative to the page (they are in the output folder). Inputs and real images live
elsewhere: their thumbnails (at most 256 px, JPEG) are embedded in the page as data URIs, so the pictures survive
moving or copying the output folder (the link to the full-size file works while that file stays where it is). No
thumbnail files are written, so the output folder holds only translations (an FID over it counts nothing else).
Formats browsers do not show (TIFF) appear as text links.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from ..data.folder import load_image
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


THUMBNAIL = 256  # longer side of embedded thumbnails, in pixels


def thumbnail_uri(path: Path, size: int = THUMBNAIL) -> str | None:
    """A ``data:image/jpeg;base64,...`` URI of ``path`` scaled to at most ``size`` px (aspect kept); None when
    the file cannot be read as an image."""
    try:
        image = load_image(path, 3)
    except (OSError, ValueError):
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _cell(target: Path, page_dir: Path, label: str, embed: bool = False) -> str:
    """A table cell showing ``target`` linked to its full-size file; ``embed``: its thumbnail inside the page
    (a file outside the output folder), else the file itself scaled by CSS."""
    href = html.escape(_href(target, page_dir), quote=True)
    src = thumbnail_uri(Path(target)) if embed else (href if Path(target).suffix.lower() in _SHOWN else None)
    if src is not None:
        inner = f'<img src="{src}" alt="{html.escape(label, quote=True)}" loading="lazy">'
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


def _real_cell(reals: Sequence[Path] | None, index: int, page_dir: Path) -> str:
    if reals is None:
        return ""
    return _cell(reals[index], page_dir, str(reals[index]), embed=True) if index < len(reals) else "<td></td>"


def write_gallery(
    output_dir: str | os.PathLike,
    pairs: Sequence[tuple[Path, Path]],
    title: str = "translations",
    info: Mapping[str, str] | None = None,
    metrics: Mapping | None = None,
    real_dir: str | os.PathLike | None = None,
    per_page: int = 50,
    reals: Sequence[Path] | None = None,
) -> list[Path]:
    """Write the gallery pages into ``output_dir``; returns their paths (``index.html`` first).

    Args:
        pairs: ``(input file, translated file)`` rows, in display order.
        info: key / value lines shown at the top (checkpoint, settings).
        metrics: ``cutlight.inference.evaluate_folders`` result shown at the top of every page.
        per_page: rows per page (>= 1).
        reals: real target images: a third column, the i-th beside the i-th row (empty past the last one).
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
            f"<tr><td>{first + i + 1}</td>{_cell(src, out, str(src), embed=True)}"
            f"{_cell(dst, out, _label(dst, out))}{_real_cell(reals, first + i, out)}</tr>"
            for i, (src, dst) in enumerate(chunk))
        nav = _nav(page, pages)
        real_head = "<th>real target image</th>" if reals is not None else ""
        body = (f"{head}<p>{len(pairs)} image(s); page {page} of {pages}</p>{nav}"
                f"<table><tr><th>#</th><th>input</th><th>translation</th>{real_head}</tr>{rows}</table>{nav}")
        doc = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
               f"</title><style>{_STYLE}</style></head>\n<body>{body}</body></html>\n")
        path = out / page_name(page)
        path.write_text(doc, encoding="utf-8")
        written.append(path)
    return written
