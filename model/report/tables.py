"""Tables as pandas DataFrames, written as CSV or Markdown.

The cells of a table are what the reader sees: callers format numbers (digits, n/a) before
they put them in a frame, so the CSV and the Markdown show exactly the same text.
"""
import pandas as pd

from model.files import atomic_path


def frame(rows, columns):
    """A DataFrame of rows (lists of cells) under the given column names. Cells stay the
    Python objects they are (dtype object): pandas would otherwise turn a column of integers
    with one None into floats and change how every cell of it prints."""
    return pd.DataFrame([list(r) for r in rows], columns=list(columns), dtype=object)


def write_csv(path, table):
    """The frame as CSV, atomically. The line ending is Python's csv module's ("\\r\\n"), so
    files written before the tables became frames are byte for byte the same."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        table.to_csv(f, index=False, lineterminator="\r\n")


def markdown(table):
    """GitHub Markdown of a frame: a header row, a |---| rule and one line per row, cells as
    str() of their values, without padding (pandas' to_markdown pads every column)."""
    lines = ["| " + " | ".join(str(c) for c in table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |"
              for row in table.itertuples(index=False, name=None)]
    return lines
