"""Reading the data files shipped inside the package.

Owns one thing: turning a CSV shipped as package data into rows of stripped strings, and the
small parsers for its optional numeric cells. Invariant: an empty cell is `None`, never 0, so
a missing figure can never be mistaken for a published zero.
"""

from __future__ import annotations

import csv
import io
from functools import cache
from importlib import resources


@cache
def read_rows(package: str, filename: str) -> tuple[dict[str, str], ...]:
    """All rows of `package/data/filename`, each a dict of stripped cell strings."""
    text = resources.files(package).joinpath("data", filename).read_text(encoding="utf-8")
    return tuple(
        {key.strip(): (value or "").strip() for key, value in row.items()}
        for row in csv.DictReader(io.StringIO(text))
    )


def optional_float(cell: str) -> float | None:
    """'' -> None; '1.5' -> 1.5."""
    return float(cell) if cell else None
