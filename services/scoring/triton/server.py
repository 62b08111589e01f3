"""Runs the real Triton server binary (from the nvidia-pytriton wheel) locally on CPU."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient

from scoring.core.process import ManagedProcess, ProcessStartError
from scoring.core.settings import TritonSettings
from scoring.triton.config import CPU_BACKEND

logger = logging.getLogger(__name__)

BACKEND_SOURCE = Path(__file__).parent / "backend" / "model.py"


class TritonStartError(ProcessStartError):
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


def servable_models(model_repository: Path, names: Iterable[str]) -> list[str]:
    """The models of `names` with at least one version folder in the repository: what Triton
    can load. A shop without campaigns has no activity_ranker version, and Triton refuses to
    start when asked to load a model with none."""
    root = Path(model_repository)
    return [
        name
        for name in names
        if (root / name).is_dir()
        and any(p.is_dir() and p.name.isdigit() for p in (root / name).iterdir())
    ]


@dataclass
class TritonServer(ManagedProcess):
    """A local Triton process in explicit model-control mode, bound to 127.0.0.1; ready when
    the server is live and every model in `models` is ready.

    Use as a context manager, or call `start()` / `wait_ready()` / `stop()`.
    """

    name = "triton"
    start_error = TritonStartError
    stop_timeout_s = 30.0

    settings: TritonSettings
    models: list[str]
    log_path: Path | None = None

    @property
    def grpc_port(self) -> int:
        return int(self.settings.url.rsplit(":", 1)[1])

    @property
    def startup_timeout_s(self) -> float:
        return self.settings.startup_timeout_s

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
        self.log_path = self.log_path or self.settings.work_dir / "triton.log"
        cmd = self.command(backends, install)
        logger.info("starting triton: %s", " ".join(cmd))
        self._spawn(cmd, server_env(install), self.log_path)

    @contextmanager
    def _readiness(self) -> Iterator[Callable[[], bool]]:
        client = grpcclient.InferenceServerClient(self.settings.url)

        def ready() -> bool:
            try:
                return bool(
                    client.is_server_live() and all(client.is_model_ready(m) for m in self.models)
                )
            except Exception:  # not up yet
                return False

        try:
            yield ready
        finally:
            client.close()
