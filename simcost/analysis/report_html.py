"""The page parts of `simcost report` (simcost.analysis.report): a self-contained HTML page with
inline style, sections, tables, key-value lists, base64 figures and number formats."""

from __future__ import annotations

import base64
import math
import tempfile
from collections.abc import Callable
from html import escape
from pathlib import Path

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1d2330;
       max-width: 1240px; margin: 24px auto; padding: 0 20px; }
h1 { font-size: 24px; margin-bottom: 2px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 2px solid #d8dde6;
     padding-bottom: 4px; } h3 { font-size: 15px; margin-top: 20px; }
.meta, .note, figcaption { color: #5a6478; font-size: 13px; }
.scroll { overflow-x: auto; } .side { display: flex; flex-wrap: wrap; gap: 0 40px; align-items: flex-start; }
table { border-collapse: collapse; margin: 8px 0 12px; font-variant-numeric: tabular-nums; font-size: 13px; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e4e8ee; text-align: left; vertical-align: top; }
th { background: #f3f5f9; font-weight: 600; } td.num, th.num { text-align: right; }
tr.total td { font-weight: 600; border-top: 2px solid #c9d0db; }
.ok { color: #17803d; font-weight: 600; } .bad { color: #b42318; font-weight: 600; }
figure { margin: 12px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e4e8ee; }
"""
# the browser may load nothing but the page itself and its data: images
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# --- HTML pieces ----------------------------------------------------------------------------------

def page(title: str, subtitle: str, sections: list[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        made_by = f"simcost {version('simcost')}"
    except PackageNotFoundError:
        made_by = "simcost"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{escape(title)}</h1>", f'<p class="meta">{escape(subtitle)}</p>',
        *[s for s in sections if s],
        f'<p class="note">Made by {escape(made_by)} (simcost report); self-contained: no server or network needed.</p>',
        "</body>", "</html>", ""])


def section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}">\n<h2>{escape(title)}</h2>\n' + "\n".join(p for p in parts if p) + "\n</section>"


def table(head: list[str], rows: list[list], numeric_from: int = 1, total_rows: int = 0, caption: str = "") -> str:
    """Cells are escaped here; columns from numeric_from on are right-aligned; the last total_rows
    rows are set off as totals."""
    num, total = ' class="num"', ' class="total"'

    def cells(row, tag):
        return "".join(f"<{tag}{num if i >= numeric_from else ''}>{escape(str(v))}</{tag}>" for i, v in enumerate(row))
    body = [f"<tr{total if i >= len(rows) - total_rows else ''}>{cells(r, 'td')}</tr>" for i, r in enumerate(rows)]
    cap = f'<p class="note">{escape(caption)}</p>' if caption else ""
    return (f'<div class="scroll"><table>\n<thead><tr>{cells(head, "th")}</tr></thead>\n<tbody>\n' + "\n".join(body)
            + "\n</tbody>\n</table></div>" + cap)


def side(*parts: str) -> str:
    """Small tables next to each other (wrapping on a narrow window)."""
    return '<div class="side">' + "".join(f"<div>{p}</div>" for p in parts if p) + "</div>"


def key_values(rows: list[tuple[str, str]]) -> str:
    body = "\n".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows if v)
    return f"<table>\n<tbody>\n{body}\n</tbody>\n</table>"


def figure(png: bytes, alt: str, caption: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def png_of(draw: Callable[[Path], object]) -> bytes:
    """The bytes of the PNG that draw(path) writes (simcost's plot functions write to a path)."""
    with tempfile.TemporaryDirectory(prefix="simcost-report-") as tmp:
        path = Path(tmp) / "figure.png"
        draw(path)
        return path.read_bytes()


def fmt(value, spec: str) -> str:
    """A number as the report shows it: spec is a format spec, or ms / pct / bool; None and NaN as '-'."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if spec == "bool":
        return "yes" if value in (True, "True", "true") else "no"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if spec == "ms":
        return f"{value * 1e3:,.1f}"
    if spec == "pct":
        return f"{value:.1%}"
    return format(value, spec)


def usd(value, digits: int = 4) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"
