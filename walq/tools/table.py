"""Plain aligned text tables, for the command line's reports."""

from __future__ import annotations

__all__ = ["format_table"]


def format_table(headers: list[str], rows: list[list], right: set[int] | None = None) -> str:
    """A plain aligned table (columns in ``right`` are right-aligned)."""
    right = right if right is not None else set(range(1, len(headers)))
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     .rstrip())
    return "\n".join(lines)
