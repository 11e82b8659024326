"""Progress lines for long work, on stderr."""

from __future__ import annotations

import sys


def report_progress(label: str, done: int, total: int, *, unit: str = "", stream=None) -> None:
    """``label: done/total unit``. On a terminal the line is rewritten in place (``\\r``) at every call
    and ends with a newline when done == total; on a pipe or a CI log a line is written only when the
    count crosses a tenth of the total (and at the end), so logs stay short and readable."""
    stream = sys.stderr if stream is None else stream
    text = f"{label}: {done}/{total}{' ' + unit if unit else ''}"
    last = done >= total
    if getattr(stream, "isatty", lambda: False)():
        print(f"\r{text}", end="\n" if last else "", file=stream, flush=True)
    elif last or total <= 0 or done * 10 // total != (done - 1) * 10 // total:
        print(text, file=stream, flush=True)
