"""Logging on a server: records are queued by the caller and written by one thread, with the
caller's request id and exception; nothing queued is lost when the thread stops."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from scoring.core.logging import configure_logging, stop_background_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    stop_background_logging()
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def test_background_logging_keeps_context_exceptions_and_every_record(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json=True, background=True)
    structlog.contextvars.bind_contextvars(request_id="req-1")
    try:
        raise KeyError("missing")
    except KeyError:
        structlog.get_logger("native").exception("native_failed", step=1)
        logging.getLogger("stdlib").exception("stdlib_failed %s", "arg")
    structlog.contextvars.clear_contextvars()  # the records above keep the id they were logged with
    for i in range(500):
        structlog.get_logger("native").info("rank", i=i)
    stop_background_logging()

    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [r["i"] for r in records if r["event"] == "rank"] == list(range(500))
    native, stdlib = records[0], records[1]
    assert native["event"] == "native_failed" and native["request_id"] == "req-1"
    assert "KeyError: 'missing'" in native["exception"]
    assert stdlib["event"] == "stdlib_failed arg" and stdlib["request_id"] == "req-1"
    assert "KeyError: 'missing'" in stdlib["exception"]
    assert all("request_id" not in r for r in records[2:])
