"""Plain-text tables for the command-line tools."""

from collections.abc import Sequence


def format_table(
    rows: Sequence[dict], columns: Sequence[tuple[str, str, str]] | None = None
) -> str:
    """Rows of dicts as an aligned table. `columns` lists (key, title, format spec); by default
    every key, in the order first seen, formatted with `str`."""
    if columns is None:
        keys = list(dict.fromkeys(key for row in rows for key in row))
        columns = [(key, key, "") for key in keys]
    header = [title for _, title, _ in columns]
    body = [
        [format(row[key], spec) if key in row else "" for key, _, spec in columns] for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=True)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) for cells in body]
    return "\n".join(lines)
