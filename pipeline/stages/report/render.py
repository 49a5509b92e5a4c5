"""The report rendered: one self-contained HTML page and its Markdown twin."""
from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

from pipeline.data import pngio
from pipeline.stages.report.content import Cell, Figure, Para, Section, Table


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
 padding:16px 24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:8px 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
nav a{margin-right:12px;font-size:13px} code{background:#f3f3f5;padding:1px 4px;border-radius:3px;font-size:12.5px}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px} caption{text-align:left;font-size:12px;color:#a15c00}
th,td{border:1px solid #d8d8dc;padding:3px 8px} th{background:#f3f3f5;font-weight:600;text-align:center}
td{text-align:right;font-variant-numeric:tabular-nums} td.t,td:first-child{text-align:left} td.c{text-align:center}
tr:nth-child(even) td{background:#fafafc} .scroll{overflow-x:auto}
figure{margin:10px 0 18px} figure img{max-width:100%;height:auto;border:1px solid #eee}
img.px{image-rendering:pixelated} figcaption{font-size:12px;color:#555} p.note{color:#666;font-size:12.5px;margin:4px 0}
p.warn{color:#8a4b00;background:#fff4e0;border-left:3px solid #e39b2d;padding:4px 8px;font-size:12.5px}
"""


def _inline_html(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)


def _td(c: Cell, first: bool = False) -> str:
    cls = "" if first or _numeric(c.text) else ' class="c"' if len(c.text) <= 3 else ' class="t"'
    t = html.escape(c.text)
    return f"<td{cls}><b>{t}</b></td>" if c.bold else f"<td{cls}>{t}</td>"


def render_html(title: str, sections: list[Section]) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width,initial-scale=1">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             "<nav>" + "".join(f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>' for s in sections[1:])
             + "</nav>"]
    for s in sections:
        parts.append(f'<section id="{html.escape(s.id)}"><h2>{html.escape(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, Para):
                cls = f' class="{b.cls}"' if b.cls else ""
                parts.append(f"<p{cls}>{_inline_html(b.text)}</p>")
            elif isinstance(b, Table):
                tid = f' id="{html.escape(b.id)}"' if b.id else ""
                rows = ["<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in b.columns) + "</tr>"]
                for i, r in enumerate(b.rows):
                    key = f' data-stage="{html.escape(b.keys[i])}"' if b.keys and i < len(b.keys) else ""
                    rows.append(f"<tr{key}>" + "".join(_td(c, j == 0) for j, c in enumerate(r)) + "</tr>")
                cap = f"<caption>{html.escape(b.caption)}</caption>" if b.caption else ""
                parts.append(f'<div class="scroll"><table{tid}>{cap}' + "".join(rows) + "</table></div>")
            elif isinstance(b, Figure):
                uri = "data:image/png;base64," + base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
                size = ""
                if b.min_width:
                    w, _ = pngio.image_size(b.path)
                    if 0 < w < b.min_width:
                        size = f' width="{w * math.ceil(b.min_width / w)}" class="px"'
                parts.append(f'<figure><img src="{uri}"{size} alt="{html.escape(b.caption)}">'
                             f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[+-]?[0-9.]+( %)?|—|", text.strip()))


def _md_cell(c: Cell) -> str:
    t = c.text.replace("|", "\\|")
    return f"**{t}**" if c.bold and t.strip() else t


def render_markdown(title: str, sections: list[Section], base: Path) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Para):
                lines += [("> " if b.cls == "warn" else "") + (f"_{b.text}_" if b.cls == "note" else b.text), ""]
            elif isinstance(b, Table):
                if b.caption:
                    lines += [f"_{b.caption}_", ""]
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in b.columns) + " |")
                numeric = [i > 0 and all(_numeric(r[i].text) for r in b.rows if i < len(r)) for i in range(len(b.columns))]
                lines.append("|" + "|".join(" ---: " if n else " --- " for n in numeric) + "|")
                for r in b.rows:
                    lines.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
                lines.append("")
            elif isinstance(b, Figure):
                rel = Path(b.path).resolve().relative_to(base.resolve()).as_posix()
                alt = b.caption.replace("[", "(").replace("]", ")")
                lines += [f"![{alt}]({rel})", "", f"_{b.caption}_", ""]
    return "\n".join(lines) + "\n"


