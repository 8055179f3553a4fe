"""Charts of the report as inline SVG, drawn here: no script and no file to load, so the pages render
offline and print as they show."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

__all__ = ["bar_chart", "column_chart", "score_histogram"]

_POS, _OTHER, _LINE = "#2f6fdf", "#c4cbd6", "#d03030"
_NAME_CHARS = 28  # of a bar's name, left of the bar


def _svg(width: int, height: int, body: list[str], title: str) -> Markup:
    return Markup(f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
                  f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
                  + "".join(body) + "</svg>")


def bar_chart(items: Sequence[tuple[str, int, str | None]], title: str, width: int = 640) -> Markup:
    """Horizontal bars, one per ``(name, value, link)``; a bar with a link opens it."""
    row, left, right = 18, 170, 60
    top = max((v for _, v, _ in items), default=0) or 1
    span = width - left - right
    body = []
    for k, (name, value, href) in enumerate(items):
        y = k * row
        w = max(1.0, span * value / top) if value else 0.0
        bar = (f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{_POS}">'
               f'<title>{escape(name)}: {value}</title></rect>')
        shown = name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS - 1] + "\u2026"  # cut names end in an ellipsis
        text = (f'<text x="{left - 6}" y="{y + row - 5}" text-anchor="end"><title>{escape(name)}</title>'
                f'{escape(shown)}</text>')
        if href:
            bar, text = (f'<a href="{escape(href)}">{bar}</a>', f'<a href="{escape(href)}">{text}</a>')
        body += [text, bar, f'<text x="{left + w + 4:.1f}" y="{y + row - 5}">{value}</text>']
    return _svg(width, max(row, row * len(items)), body, title)


def column_chart(items: Sequence[tuple[str, int]], title: str, width: int = 640, height: int = 180) -> Markup:
    """Vertical columns, one per ``(bin name, count)``, names under them."""
    base, top = height - 20, max((v for _, v in items), default=0) or 1
    step = min(56.0, width / max(1, len(items)))
    body = [f'<line x1="0" y1="{base}" x2="{step * len(items):.1f}" y2="{base}" stroke="#888"/>']
    for k, (name, value) in enumerate(items):
        h = (base - 14) * value / top
        x = k * step
        body += [f'<rect x="{x + 2:.1f}" y="{base - h:.1f}" width="{max(1.0, step - 4):.1f}" height="{h:.1f}" '
                 f'fill="{_POS}"><title>{escape(name)}: {value}</title></rect>',
                 f'<text x="{x + step / 2:.1f}" y="{height - 5}" text-anchor="middle">{escape(name)}</text>',
                 f'<text x="{x + step / 2:.1f}" y="{base - h - 3:.1f}" text-anchor="middle">{value}</text>']
    return _svg(width, height, body, title)


def score_histogram(hist: dict[str, Any], threshold: float | None, title: str, width: int = 640,
                    height: int = 200) -> Markup:
    """A label's score histogram (positive tags stacked on the others) with its threshold as a line."""
    lo, hi = hist["lo"], hist["hi"]
    pos, other = hist["positive"], hist["other"]
    n = len(pos)
    base, top = height - 22, max((p + o for p, o in zip(pos, other)), default=0) or 1
    step = width / n
    body = [f'<line x1="0" y1="{base}" x2="{width}" y2="{base}" stroke="#888"/>']
    for k in range(n):
        h_o, h_p = (base - 10) * other[k] / top, (base - 10) * pos[k] / top
        x = k * step
        edge = lo + (hi - lo) * k / n
        tip = f"{edge:.3g} to {edge + (hi - lo) / n:.3g}: {pos[k]} positive, {other[k]} other"
        body += [f'<g><title>{escape(tip)}</title>'
                 f'<rect x="{x + 1:.1f}" y="{base - h_o:.1f}" width="{max(1.0, step - 2):.1f}" height="{h_o:.1f}" '
                 f'fill="{_OTHER}"/><rect x="{x + 1:.1f}" y="{base - h_o - h_p:.1f}" '
                 f'width="{max(1.0, step - 2):.1f}" height="{h_p:.1f}" fill="{_POS}"/></g>']
    body += [f'<text x="0" y="{height - 6}">{lo:.3g}</text>',
             f'<text x="{width}" y="{height - 6}" text-anchor="end">{hi:.3g}</text>']
    if threshold is not None:
        x = min(max((threshold - lo) / (hi - lo), 0.0), 1.0) * width
        body += [f'<line class="threshold" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{base}" stroke="{_LINE}" '
                 f'stroke-width="2" stroke-dasharray="5,3"><title>threshold {threshold:.4g}</title></line>',
                 f'<text x="{min(x + 4, width - 90):.1f}" y="12" fill="{_LINE}">threshold {threshold:.3g}</text>']
    return _svg(width, height, body, title)
