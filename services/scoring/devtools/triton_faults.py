"""Triton's faults for the reliability harness: frozen, killed, its python-backend stub killed,
and the gateway started before it. Each promises the popularity fallback (flagged degraded)
while the model cannot answer, within every request's deadline, and model answers again by
themselves (scoring.devtools.faults runs them)."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

from scoring.devtools.fault_stack import FAULT_TARGET, FaultStack
from scoring.devtools.reliability import Phases, Scenario
from scoring.devtools.soak import descendants

STUB = "triton_python_backend_stub"


def _triton_pid(stack: FaultStack) -> int:
    process = stack.triton.process if stack.triton is not None else None
    if process is None:
        raise RuntimeError("triton is not running")
    return int(process.pid)


def stub_processes(triton_pid: int, model: str) -> list[int]:
    """The PIDs of `model`'s python-backend stub processes under a tritonserver process."""
    found = []
    for pid in descendants(triton_pid):
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if STUB in line and model in line:
            found.append(pid)
    return found


MODEL_FALLBACK = "Every request answered within its deadline: the popularity fallback, flagged "


def triton_hang(stack: FaultStack, phases: Phases) -> Scenario:
    return Scenario(
        name="triton-hang",
        fault="Triton frozen (SIGSTOP) and resumed (SIGCONT)",
        promise=MODEL_FALLBACK + "`model_unavailable`, while Triton is frozen; model answers "
        "again by themselves once it resumes.",
        inject=lambda: os.kill(_triton_pid(stack), signal.SIGSTOP),
        restore=lambda: os.kill(_triton_pid(stack), signal.SIGCONT),
        phases=phases,
        allowed_degradations=("model_",),
        degraded_while_down=True,
    )


def triton_kill(stack: FaultStack, phases: Phases) -> Scenario:
    def kill() -> None:
        pid = _triton_pid(stack)
        os.killpg(pid, signal.SIGKILL)  # the server and its stubs, as a crash
        stack.triton.process.wait()

    def restart() -> None:
        stack.stop_triton()
        stack.start_triton()

    return Scenario(
        name="triton-kill",
        fault="Triton killed (SIGKILL, with its python stubs) and started again",
        promise=MODEL_FALLBACK + "`model_unavailable` (never UNAVAILABLE), while Triton is "
        "down; model answers again once it is back, without restarting the gateway.",
        inject=kill,
        restore=restart,
        phases=phases,
        allowed_degradations=("model_",),
        degraded_while_down=True,
    )


def stub_kill(stack: FaultStack, phases: Phases) -> Scenario:
    def kill() -> None:
        stubs = stub_processes(_triton_pid(stack), FAULT_TARGET)
        if not stubs:
            raise RuntimeError(f"no {STUB} process of {FAULT_TARGET} under tritonserver")
        for pid in stubs:
            os.kill(pid, signal.SIGKILL)

    return Scenario(
        name="triton-stub-kill",
        fault=f"The python-backend stub process of {FAULT_TARGET} killed (SIGKILL); Triton itself "
        "keeps running",
        promise=MODEL_FALLBACK + "`model_unavailable`, while the model cannot answer; model "
        "answers again without restarting Triton or the gateway.",
        inject=kill,
        restore=lambda: None,
        phases=phases,
        allowed_degradations=("model_",),
        recovers_from_fault=True,
    )


def gateway_before_triton(stack: FaultStack, phases: Phases) -> Scenario:
    def prepare() -> None:
        stack.stop_gateway()
        stack.stop_triton()
        stack.start_gateway(wait_serving=False)

    return Scenario(
        name="gateway-before-triton",
        fault="The gateway started while Triton is down; Triton started later",
        promise="Until Triton is up the gateway answers with the popularity fallback, flagged "
        "degraded (not UNAVAILABLE), in time; model answers once it is up, with no gateway "
        "restart.",
        inject=lambda: None,
        restore=stack.start_triton,
        phases=replace(phases, before_s=0.0),
        prepare=prepare,
        allowed_degradations=("model_",),
        degraded_while_down=True,
    )
