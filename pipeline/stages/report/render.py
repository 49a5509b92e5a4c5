"""The report rendered through two Jinja2 templates: one self-contained HTML page (every figure embedded
as a data: URI, inline CSS) and its Markdown twin linking the figure files. Both link, relative to
the report folder, each figure's SVG and the tables' CSV and LaTeX files written beside them."""
from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

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


HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{ title }}</title><style>{{ css }}</style></head><body>
<h1>{{ title }}</h1>
<nav>{% for s in sections[1:] %}<a href="#{{ s.id }}">{{ s.title }}</a>{% endfor %}</nav>
{% for s in sections -%}
<section id="{{ s.id }}"><h2>{{ s.title }}</h2>
{% for b in s.blocks -%}
{% if b is para -%}
<p{% if b.cls %} class="{{ b.cls }}"{% endif %}>{{ b.text | inline }}</p>
{% elif b is table -%}
<div class="scroll"><table{% if b.id %} id="{{ b.id }}"{% endif %}>{% if b.caption %}<caption>{{ b.caption }}</caption>{% endif -%}
<tr>{% for c in b.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{%- for r in b.rows %}<tr{% if b.keys and loop.index0 < b.keys | length %} data-stage="{{ b.keys[loop.index0] }}"{% endif %}>
{%- for c in r %}<td{{ cell_class(c, loop.first) }}>{% if c.bold %}<b>{{ c.text }}</b>{% else %}{{ c.text }}{% endif %}</td>{% endfor %}</tr>
{%- endfor %}</table></div>
{% elif b is figure -%}
<figure><img src="{{ b | data_uri }}"{{ b | enlarge }} alt="{{ b.caption }}"><figcaption>{{ b.caption }}
{%- if b | vector %} (<a href="{{ b | vector }}">SVG</a>){% endif %}</figcaption></figure>
{% endif -%}
{% endfor -%}
</section>
{% endfor -%}
</body></html>
"""

MARKDOWN = """# {{ title }}

{% for s in sections -%}
## {{ s.title }}

{% for b in s.blocks -%}
{% if b is para -%}
{% if b.cls == "warn" %}> {% endif %}{% if b.cls == "note" %}_{{ b.text }}_{% else %}{{ b.text }}{% endif %}

{% elif b is table -%}
{% if b.caption %}_{{ b.caption }}_

{% endif -%}
| {{ b.columns | map("md") | join(" | ") }} |
|{% for numeric in numeric_columns(b) %}{{ " ---: " if numeric else " --- " }}|{% endfor %}
{% for r in b.rows -%}
| {{ r | map("md_cell") | join(" | ") }} |
{% endfor %}
{% elif b is figure -%}
![{{ b.caption | replace("[", "(") | replace("]", ")") }}]({{ b | relative }})

_{{ b.caption }}_{% if b | vector %} ([SVG]({{ b | vector }})){% endif %}

{% endif -%}
{% endfor -%}
{% endfor -%}
"""


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[+-]?[0-9.]+( %)?|—|", text.strip()))


def _inline(text: str) -> Markup:
    """A paragraph's `code` spans, **bold** and [links](relative/path), the rest escaped."""
    t = str(escape(text))
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', t)
    return Markup(re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t))


def _vector(base: Path):
    """The filter giving a figure's SVG twin relative to `base` ("" when there is none)."""
    def vector(f: Figure) -> str:
        svg = Path(f.path).with_suffix(".svg")
        return svg.resolve().relative_to(base.resolve()).as_posix() if svg.is_file() else ""
    return vector


def _cell_class(c: Cell, first: bool) -> Markup:
    """Numbers align right (the CSS default), short marks centre, other text left; the first column left."""
    return Markup("" if first or _numeric(c.text) else ' class="c"' if len(c.text) <= 3 else ' class="t"')


def _data_uri(f: Figure) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(f.path).read_bytes()).decode("ascii")


def _enlarge(f: Figure) -> Markup:
    """Small previews shown at an integer multiple of their width, pixelated."""
    if f.min_width:
        w, _ = pngio.image_size(f.path)
        if 0 < w < f.min_width:
            return Markup(f' width="{w * math.ceil(f.min_width / w)}" class="px"')
    return Markup("")


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(autoescape=autoescape, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.tests.update(para=lambda b: isinstance(b, Para), table=lambda b: isinstance(b, Table),
                     figure=lambda b: isinstance(b, Figure))
    return env


def render_html(title: str, sections: list[Section], base: Path) -> str:
    env = _environment(autoescape=True)
    env.filters.update(inline=_inline, data_uri=_data_uri, enlarge=_enlarge, vector=_vector(base))
    return env.from_string(HTML).render(title=title, css=Markup(_CSS), sections=sections, cell_class=_cell_class)


def render_markdown(title: str, sections: list[Section], base: Path) -> str:
    env = _environment(autoescape=False)
    def md(text: str) -> str:
        return text.replace("|", "\\|")
    env.filters.update(md=md, md_cell=lambda c: f"**{md(c.text)}**" if c.bold and c.text.strip() else md(c.text),
                       relative=lambda f: Path(f.path).resolve().relative_to(base.resolve()).as_posix(),
                       vector=_vector(base))
    numeric_columns = lambda b: [i > 0 and all(_numeric(r[i].text) for r in b.rows if i < len(r))  # noqa: E731
                                 for i in range(len(b.columns))]
    return env.from_string(MARKDOWN).render(title=title, sections=sections, numeric_columns=numeric_columns)
