"""A bar chart drawn on the server as SVG (no JavaScript, no inline style: CSP-clean): one group
of bars per label (an hour), one bar per series, a legend, and a <title> on every bar."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD, LEGEND = 480, 140, 18, 16


@dataclass(frozen=True)
class Series:
    name: str  # "received": the legend and each bar's title say it
    values: Sequence[int]
    colour: str


def bars(series: Sequence[Series], labels: Sequence[str], title: str) -> Markup:
    """Grouped bars, the labels under every sixth group, the highest value marked."""
    top = max((v for s in series for v in s.values), default=0) or 1
    step = (WIDTH - 2 * PAD) / max(1, len(labels))
    width = max(1.0, (step - 2) / max(1, len(series)))
    base = LEGEND + PAD + HEIGHT
    totals = ", ".join(f"{sum(s.values)} {escape(s.name)}" for s in series)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {base + PAD}" role="img" '
             f'aria-label="{escape(title)}: {totals}" xmlns="http://www.w3.org/2000/svg">'
             f'<title>{escape(title)}</title><desc>{totals}</desc>',
             f'<text x="{PAD}" y="{LEGEND + PAD - 4}" font-size="11" fill="#5b6470">max {top}</text>']
    x = WIDTH - PAD
    for one in reversed(series):  # the legend, right-aligned on the first line
        x -= 8 + 6 * len(one.name) + 18
        parts.append(f'<rect x="{x}" y="3" width="10" height="10" fill="{one.colour}"/>'
                     f'<text x="{x + 14}" y="12" font-size="11" fill="#5b6470">{escape(one.name)}</text>')
    for i, label in enumerate(labels):
        left = PAD + i * step + 1
        for j, one in enumerate(series):
            value = one.values[i]
            height = HEIGHT * value / top
            parts.append(f'<rect x="{left + j * width:.1f}" y="{base - height:.1f}" width="{width:.1f}" '
                         f'height="{height:.1f}" fill="{one.colour}"><title>{escape(label)}: {value} '
                         f'{escape(one.name)}</title></rect>')
        if i % 6 == 0:
            parts.append(f'<text x="{left:.1f}" y="{base + 13}" font-size="11" fill="#5b6470">{escape(label)}</text>')
    parts.append(f'<line x1="{PAD}" y1="{base}" x2="{WIDTH - PAD}" y2="{base}" stroke="#d8dde3"/>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above
