"""The one user-error type.

A :class:`UserError` is something the user can fix (a bad recipe key, a missing file, a malformed
data row).  The CLI prints its message as one red line and exits with status 2; any other exception
is an internal error (exit 1).  ``--debug`` shows the traceback in both cases.
"""

from __future__ import annotations

import difflib


class UserError(Exception):
    """An error the user can fix.  The message names the file, line or key, and the fix."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


def row_error(path: str, line: int, reason: str) -> UserError:
    """A malformed data row, reported as ``path:line: reason``."""
    return UserError(reason, where=f"{path}:{line}")


def did_you_mean(key: str, valid: list[str]) -> str:
    """The hint after an unknown key: the closest valid one, or the list of valid keys."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else (f"; valid keys: {', '.join(valid)}" if valid else "")


BOM = b"\xef\xbb\xbf"


def not_utf8(path: str, raw: bytes, error: UnicodeDecodeError, *, first_line: int = 1) -> UserError:
    """A file that is not UTF-8 text, reported at the line of the first bad byte (``raw`` is what was decoded)."""
    line = first_line + raw.count(b"\n", 0, error.start)
    column = error.start - raw.rfind(b"\n", 0, error.start)
    return row_error(str(path), line, f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {column}); "
                                      "save the file as UTF-8")


def read_utf8(path) -> str:
    """A text file's contents, as UTF-8; a leading BOM (as spreadsheets and Notepad write) is dropped."""
    raw = path.read_bytes()
    raw = raw.removeprefix(BOM)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise not_utf8(str(path), raw, e) from None
