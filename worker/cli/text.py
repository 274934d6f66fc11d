"""Human output that reads at 80 columns: lines wrapped to the terminal at spaces, never inside
an id, and no markup read into data (an email or a reason may hold `[brackets]`)."""

from __future__ import annotations

import textwrap

from worker.cli.common import console

JSON_HELP = "Print JSON on stdout and nothing else."
VERBOSE_HELP = "Every row, not the summary."
FEW = 5  # ids a summary names per kind


def wrapped(text: str, indent: str = "    ") -> str:
    """`text` wrapped to the terminal, every line indented."""
    width = max(40, console.width)
    lines = textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent,
                          break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines) or indent


def say(text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def counted(items: list[str], noun: str) -> str:
    """`3 payment(s): pay_1, pay_2, pay_3` naming at most FEW of them, then `and N more`."""
    names = ", ".join(items[:FEW])
    rest = f" and {len(items) - FEW} more" if len(items) > FEW else ""
    return f"{len(items)} {noun}(s): {names}{rest}"
