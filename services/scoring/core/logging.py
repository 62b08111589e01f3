"""Structured logging: key=value locally, JSON in production; request ids via contextvars."""

from __future__ import annotations

import hashlib
import logging

import structlog


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    """Routes stdlib and structlog records through one structlog renderer (entrypoints only)."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def hash_id(value: str) -> str:
    """A stable pseudonym for ids that must not appear in logs (user ids)."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]
