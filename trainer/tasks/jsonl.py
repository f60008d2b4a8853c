"""One JSON object per line, read the way the task datasets' own loaders do, with errors naming file, line and id."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class BadRecord(Exception):
    """Raised by a record parser with the reason; :func:`iter_json_lines` adds the file, line and id."""


def iter_json_lines(path: str | Path, error_cls: type[Exception], id_field: str, parse: Callable[[Any], T]) -> Iterator[tuple[str, T]]:
    """``(where, parse(record))`` for each non-blank line of ``path`` in file order.

    ``where`` is ``"<path>:<line>: <id_field> <id>"``, the prefix of every error about that record, so
    a caller's own later checks (e.g. the image join) read the same. Raises ``error_cls`` for a line
    that is not JSON, a record ``parse`` rejects with :class:`BadRecord`, or an id seen before.
    """
    seen: set[Any] = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise error_cls(f"{path}:{lineno}: not valid JSON ({e})") from e
            rid = rec.get(id_field, "?") if isinstance(rec, dict) else "?"
            where = f"{path}:{lineno}: {id_field} {rid}"
            try:
                value = parse(rec)
            except BadRecord as e:
                raise error_cls(f"{where}: {e}") from None
            if rid in seen:
                raise error_cls(f"{where}: listed twice")
            seen.add(rid)
            yield where, value
