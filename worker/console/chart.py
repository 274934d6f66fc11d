"""A bar chart drawn on the server as SVG (no JavaScript, no inline style: CSP-clean)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 480, 140, 18


def bars(values: Sequence[int], labels: Sequence[str], title: str) -> Markup:
    """One bar per value, its label (an hour) under every sixth bar, the highest value marked."""
    top = max(values, default=0) or 1
    step = (WIDTH - 2 * PAD) / max(1, len(values))
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + 2 * PAD}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
             f'<text x="{PAD}" y="{PAD - 4}" font-size="11" fill="#5b6470">max {top}</text>']
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        height = HEIGHT * value / top
        x = PAD + i * step
        parts.append(f'<rect x="{x + 1:.1f}" y="{PAD + HEIGHT - height:.1f}" width="{max(1.0, step - 2):.1f}" '
                     f'height="{height:.1f}" fill="#0b5cad"><title>{escape(label)}: {value}</title></rect>')
        if i % 6 == 0:
            parts.append(f'<text x="{x + 1:.1f}" y="{PAD + HEIGHT + 13}" font-size="11" fill="#5b6470">'
                         f'{escape(label)}</text>')
    parts.append(f'<line x1="{PAD}" y1="{PAD + HEIGHT}" x2="{WIDTH - PAD}" y2="{PAD + HEIGHT}" stroke="#d8dde3"/>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above
