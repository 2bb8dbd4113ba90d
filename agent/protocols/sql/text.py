"""Text helpers shared by the SQL protocols (MySQL and PostgreSQL).

- `sql_method`: Packetbeat's `method`, the first word of the query, upper-cased.
- `RowText`: the `response` text, built row by row as the rows stream past,
  CSV the way Go's encoding/csv writes it (Packetbeat's DumpInCSVFormat),
  holding at most `max_rows` rows of at most `max_row_length` bytes each.
"""

from __future__ import annotations

_TRIM = " \r\n\t"
_GO_SPACE = frozenset(" \t\n\v\f\r\x85\xa0")


def sql_trim(query: str) -> str:
    return query.strip(_TRIM)


def sql_method(query: str) -> str:
    """First word of `query` (already trimmed), upper-cased; words end at any of space, CR, LF, tab."""
    end = len(query)
    for sep in _TRIM:
        index = query.find(sep, 0, end)
        if index != -1:
            end = index
    return query[:end].upper()


def _needs_quotes(field: str) -> bool:
    if not field:
        return False
    if field == "\\.":
        return True
    if "," in field or '"' in field or "\r" in field or "\n" in field:
        return True
    first = field[0]
    return first in _GO_SPACE or (ord(first) > 0xFF and first.isspace())


def csv_line(values: list[str]) -> str:
    """One record as Go's csv.Writer writes it (comma separated, LF terminated)."""
    out = []
    for value in values:
        if _needs_quotes(value):
            out.append('"' + value.replace('"', '""') + '"')
        else:
            out.append(value)
    return ",".join(out) + "\n"


def header_line(names: list[str] | tuple[str, ...]) -> str:
    return csv_line([name.replace("\n", "\\n") for name in names]) if names else ""


def row_line(values: list[str]) -> str:
    return csv_line([v.replace("\n", "\\n").replace("\r", "\\r") for v in values])


def truncate_row(values: list[bytes | None], max_row_length: int, null_text: bytes | None) -> list[str]:
    """Packetbeat's row truncation: columns are kept until `max_row_length` bytes are used.

    The column that crosses the limit is cut; later columns are dropped.  A
    None value is NULL: shown as `null_text` (MySQL: "NULL"), or as an
    empty string when `null_text` is None (PostgreSQL).
    """
    row: list[str] = []
    used = 0
    for value in values:
        if used >= max_row_length:
            break
        raw = (null_text or b"") if value is None else value
        if used + len(raw) > max_row_length:
            raw = raw[:max_row_length - used]
        row.append(raw.decode("utf-8", "replace"))
        used += len(raw)
    return row


class RowText:
    """The CSV `response` of one reply, kept bounded while its rows stream past.

    Several result sets (MySQL multi-results, several statements) append one
    after the other; `max_rows` counts rows over all of them.
    """

    __slots__ = ("max_rows", "parts", "rows")

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.parts: list[str] = []
        self.rows = 0

    @property
    def wants_rows(self) -> bool:
        return self.rows < self.max_rows

    def header(self, names: list[str] | tuple[str, ...]) -> None:
        if names:
            self.parts.append(header_line(names))

    def add_row(self, values: list[str]) -> None:
        if self.rows < self.max_rows:
            self.parts.append(row_line(values))
            self.rows += 1

    def text(self) -> str:
        return "".join(self.parts)
