"""The error console routes raise for bad input or a refused action."""

from __future__ import annotations


class ConsoleError(Exception):
    """Bad input or a refused action: the status, the message and the field it names. The app
    answers a JSON route with {"error", "field"} and a page with the message on the page."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
