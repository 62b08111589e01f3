"""Child server processes (Triton, the gateway): graceful stop of the whole group, log tails."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def stop_group(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> int | None:
    """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code (None: no process).

    The child runs in its own session (`start_new_session=True`), so its process group holds
    its helpers too (Triton's python stubs); whatever of the group outlives it is killed.
    """
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.returncode


def log_tail(path: Path | None, lines: int = 30) -> str:
    """The last `lines` lines of a log file ("" when there is none)."""
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
