"""The error type for bad user input: says what is wrong, where, and how to fix it."""

from __future__ import annotations


class Pykaldi2Error(Exception):
    """Base class of errors meant for the user (the CLI prints them without a traceback)."""


class DataError(Pykaldi2Error):
    """Bad input data: names the file, the line or utterance, and the fix.

    >>> raise DataError("empty transcript", file="data/train/text", line=12, fix="drop the utt")
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        utt: str | None = None,
        fix: str | None = None,
    ) -> None:
        where = ""
        if file is not None:
            where = str(file) + (f":{line}" if line is not None else "")
        if utt is not None:
            where += (" " if where else "") + f"(utterance {utt})"
        text = f"{where}: {message}" if where else message
        if fix:
            text += f". Fix: {fix}"
        super().__init__(text)
        self.message = message
        self.file, self.line, self.utt, self.fix = file, line, utt, fix
