"""Reading a person's small text files (mappings, decisions, labelled lists) as UTF-8, with one clear
error for what a spreadsheet or an editor often saves instead: UTF-16, another code page, binary."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

__all__ = ["check_not_utf16", "decode_utf8", "read_utf8_text"]

_UTF16 = (b"\xff\xfe", b"\xfe\xff")


def check_not_utf16(path: str | os.PathLike[str], what: str) -> None:
    """ConfigError when the file at ``path`` starts with a UTF-16 byte order mark."""
    try:
        with open(path, "rb") as fh:
            start = fh.read(2)
    except OSError:
        return  # the reader that follows says what is wrong
    if start in _UTF16:
        raise ConfigError(f"{what} {path} is UTF-16 text: save it as UTF-8")


def decode_utf8(data: bytes, name: str, hint: str = "", error: type[Exception] = ConfigError) -> str:
    """``data`` as UTF-8 text (a byte order mark dropped); ``error`` naming ``name`` (e.g. "manifest x.txt")
    for UTF-16, another encoding or binary, ``hint`` saying what the text should hold."""
    also = f", {hint}" if hint else ""
    if data.startswith(_UTF16):
        raise error(f"{name} is UTF-16 text: save it as UTF-8{also}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise error(f"{name} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}): save it as "
                    f"UTF-8{also}") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise error(f"{name} holds a NUL character on line {line}: it is binary, not UTF-8 text"
                    + (f" with {hint}" if hint else ""))
    return text


def read_utf8_text(path: str | os.PathLike[str], what: str) -> str:
    """The text of ``path`` (:func:`decode_utf8`); ConfigError naming ``what`` for a file that cannot be
    read, is not a regular file, or is UTF-16, another encoding or binary."""
    p = Path(path)
    if p.exists() and not p.is_file():  # a folder, or a FIFO that would block the read
        raise ConfigError(f"{what} {p} is not a regular file: give a text file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {p}: {e.strerror or e}") from e
    return decode_utf8(data, f"{what} {p}")
