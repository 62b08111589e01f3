"""A resource that is closed after use, and with that a context manager."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self


class Closeable(ABC):
    """`with Thing(...) as thing:` closes `thing` at the end of the block."""

    @abstractmethod
    def close(self) -> None:
        """Releases what the object holds (connections, channels)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
