"""Structured logging: key=value locally, JSON in production; request ids via contextvars."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue

import structlog

_listener: logging.handlers.QueueListener | None = None


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands the record over as it is: rendering (structlog's event dict included) happens in
    the listener's thread, not in the caller's."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # What only the caller's thread knows is taken now: the exception being handled (as
        # text) and, for a stdlib record, the context variables.
        if isinstance(record.msg, dict):
            if record.msg.get("exc_info"):
                record.msg = structlog.processors.format_exc_info(None, "", record.msg)
            return record
        context = structlog.contextvars.get_contextvars()
        if record.exc_info:
            context["exception"] = logging.Formatter().formatException(record.exc_info)
            record.exc_info = record.exc_text = None
        record.context = context
        return record


def _caller_context(
    logger: object, name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """The context variables (request id) a queued stdlib record was logged with."""
    for key, value in getattr(event.get("_record"), "context", {}).items():
        event.setdefault(key, value)
    return event


def configure_logging(level: str = "INFO", json: bool = False, background: bool = False) -> None:
    """Routes stdlib and structlog records through one structlog renderer (entrypoints only).

    With `background` (servers), a record is only queued by the caller; one thread renders and
    writes it, so neither rendering nor a slow log pipe holds up a request on the event loop.
    The queue is drained at exit (and by `stop_background_logging`).
    """
    global _listener
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
            foreign_pre_chain=[*shared, _caller_context],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    stop_background_logging()
    root = logging.getLogger()
    if background:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        _listener = logging.handlers.QueueListener(records, handler)
        _listener.start()
        atexit.register(stop_background_logging)
        root.handlers[:] = [_QueueHandler(records)]
    else:
        root.handlers[:] = [handler]
    root.setLevel(level.upper())


def stop_background_logging() -> None:
    """Writes what is queued and stops the log thread (no-op without one)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
