"""Figures a person reads in the MLflow UI: tables whose cells wrap (never cut mid-word)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence


def wrap_cell(text: object, width: int) -> str:
    """``text`` wrapped at word boundaries to ``width`` characters a line; every word kept."""
    return "\n".join(textwrap.wrap(str(text), width=width, break_long_words=True, break_on_hyphens=False)) or ""


def table_figure(header: Sequence[str], rows: Sequence[Sequence[object]], widths: Sequence[int],
                 *, font_size: int = 7, title: str | None = None):
    """A matplotlib table whose cells wrap to ``widths`` characters (one per column) and whose rows
    grow to the lines they hold: served titles that differ at their end stay readable in full.
    Returns the figure (the caller saves or logs it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [[wrap_cell(v, w) for v, w in zip(r, widths)] for r in rows]
    lines = [max(c.count("\n") + 1 for c in r) for r in cells]
    line_in = font_size * 1.45 / 72  # one text line, inches
    total_chars = sum(widths)
    fig_w = max(6.0, total_chars * font_size * 0.55 / 72 + 0.6)
    fig_h = (sum(lines) + 1) * line_in + 0.25 * len(cells) * line_in + 0.6 + (0.3 if title else 0)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    ax.axis("off")
    if cells:
        tab = ax.table(cellText=cells, colLabels=list(header), loc="upper center", cellLoc="left",
                       colWidths=[w / total_chars for w in widths])
        tab.auto_set_font_size(False)
        tab.set_fontsize(font_size)
        row_h = 1.0 / (sum(lines) + 1 + 0.25 * len(cells))
        for (r, _c), cell in tab.get_celld().items():
            n = 1 if r == 0 else lines[r - 1]
            cell.set_height(row_h * (n + 0.25))
            cell.get_text().set_verticalalignment("center")
    if title:
        ax.set_title(title, fontsize=font_size + 2)
    fig.tight_layout()
    return fig
