"""The Markdown pieces that train.report and its claim sections (report_claims.py) share."""

DASH = "—"   # an empty cell: no value, or none yet


def markdown_table(header, rows):
    """A Markdown table of string cells; a "|" inside a cell is escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)
