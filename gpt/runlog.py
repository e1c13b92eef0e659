"""log.jsonl: one JSON object per evaluation (iter, train_loss, val_loss, lr, ...).

A run killed while appending can leave a torn last line: it has no newline at its end and
does not parse.  Reading drops such a line (and says so); any other line that is not a
log row is an error naming the file and the line, because guessing would lose data.
"""
import json
import os
from typing import List, Tuple


class LogError(ValueError):
    """log.jsonl holds a line that is not a log row; the message names file and line."""


def _row(line: bytes):
    """The dict on this line, or None if it is not a log row."""
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    numbers = (int, float)
    if (not isinstance(row, dict) or type(row.get("iter")) is not int or row["iter"] < 0
            or not all(isinstance(row.get(k), numbers) and not isinstance(row.get(k), bool)
                       for k in ("train_loss", "val_loss"))):
        return None
    return row


def read_log_rows(path: str) -> Tuple[List[dict], bool]:
    """(rows, whether a torn last line was dropped) of a log.jsonl file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise LogError(f"{os.path.abspath(path)} is a folder, not a log file; move it away") from None
    lines = data.split(b"\n")
    torn = lines.pop()                     # after the last newline: b"" unless the last line is torn
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = _row(line)
        if row is None:
            raise LogError(f"{os.path.abspath(path)} line {number} is not a log row ({line[:60]!r}); "
                           f"fix or delete that line")
        rows.append(row)
    if torn.strip():
        row = _row(torn)
        if row is None:
            return rows, True
        rows.append(row)
    return rows, False


def write_log_rows(path: str, rows: List[dict]) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
