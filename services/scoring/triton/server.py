"""Runs the real Triton server binary (from the nvidia-pytriton wheel) locally on CPU."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import tritonclient.grpc as grpcclient

from scoring.core.process import log_tail, stop_group
from scoring.core.settings import TritonSettings
from scoring.triton.config import CPU_BACKEND

logger = logging.getLogger(__name__)

BACKEND_SOURCE = Path(__file__).parent / "backend" / "model.py"


class TritonStartError(RuntimeError):
    """Triton exited or did not become ready in time; the message holds its log tail."""


@dataclass(frozen=True, slots=True)
class TritonInstall:
    """Where the wheel put the server binary, its backends, stubs and shared libraries."""

    root: Path

    @classmethod
    def locate(cls) -> TritonInstall:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonStartError(
                "nvidia-pytriton is not installed: run `make install` (it installs it --no-deps)"
            )
        return cls(Path(next(iter(spec.submodule_search_locations))) / "tritonserver")

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def libs(self) -> Path:
        return self.root.parent.parent / "nvidia_pytriton.libs"

    def stub(self) -> Path:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "python_backend_stubs" / version / "triton_python_backend_stub"


def prepare_backends(install: TritonInstall, work_dir: Path) -> Path:
    """Builds the backend directory: the python backend + its stub + our `torchscript` backend.

    Rebuilt on every call (cheap) so that an upgraded wheel or backend is always picked up.
    """
    target = work_dir / "backends"
    tmp = work_dir / f".backends.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(install.root / "backends", tmp)
    shutil.copy2(install.stub(), tmp / "python" / "triton_python_backend_stub")
    (tmp / CPU_BACKEND).mkdir()
    shutil.copy2(BACKEND_SOURCE, tmp / CPU_BACKEND / "model.py")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def server_env(install: TritonInstall) -> dict[str, str]:
    """Environment for the server: its libraries, and this venv's python first on PATH.

    The python backend stub takes its interpreter (and so torch) from `python3` on PATH.
    """
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(install.libs), libdir, env.get("LD_LIBRARY_PATH", "")) if p
    )
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


@dataclass
class TritonServer:
    """A local Triton process in explicit model-control mode, bound to 127.0.0.1.

    Use as a context manager, or call `start()` / `wait_ready()` / `stop()`.
    """

    settings: TritonSettings
    models: list[str]
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    @property
    def grpc_port(self) -> int:
        return int(self.settings.url.rsplit(":", 1)[1])

    def command(self, backends: Path, install: TritonInstall) -> list[str]:
        host = self.settings.url.rsplit(":", 1)[0]
        cmd = [
            str(install.binary),
            f"--model-repository={self.settings.model_repository.resolve()}",
            f"--backend-directory={backends.resolve()}",
            "--model-control-mode=explicit",
            "--disable-auto-complete-config",
            "--strict-readiness=false",
            f"--grpc-address={host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={host}",
            f"--http-port={self.settings.http_port}",
            f"--metrics-address={host}",
            f"--metrics-port={self.settings.metrics_port}",
            "--log-verbose=0",
        ]
        if self.settings.config_name:
            cmd.append(f"--model-config-name={self.settings.config_name}")
        cmd += [f"--load-model={m}" for m in self.models]
        return cmd

    def start(self) -> None:
        install = TritonInstall.locate()
        backends = prepare_backends(install, self.settings.work_dir)
        log_path = self.log_path or self.settings.work_dir / "triton.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self.log_path = log_path
        cmd = self.command(backends, install)
        logger.info("starting triton: %s", " ".join(cmd))
        # Own session: stopping it (and its python stubs) never touches the caller's group.
        self.process = subprocess.Popen(
            cmd,
            env=server_env(install),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Polls until the server and every model are ready; fails fast if the process dies."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + (timeout_s or self.settings.startup_timeout_s)
        client = grpcclient.InferenceServerClient(self.settings.url)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise TritonStartError(
                        f"triton exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.is_server_live() and all(
                        client.is_model_ready(m) for m in self.models
                    ):
                        return
                except Exception:  # not up yet
                    pass
                time.sleep(0.1)
        finally:
            client.close()
        raise TritonStartError(f"triton not ready after {timeout_s}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL of its process group (stubs included); returns the exit code."""
        proc, self.process = self.process, None
        rc = stop_group(proc, timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
