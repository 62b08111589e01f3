"""Triton's model-control API (explicit mode): load exactly the versions the registry serves.

Each target is one Triton model whose versions are the numbered folders of its directory. A
load sends the model's own config file (the serving profile's) with `version_policy.specific`
set to the wanted versions, so Triton keeps serving the versions it already has while it loads
the new one, and drops those no longer listed once the reload succeeded ("a reload that
succeeds replaces the loaded model without loss of availability").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from scoring.core.model_io import FEATURES_INPUT, SCORE_OUTPUT, WARMUP_ROWS
from scoring.core.settings import TritonSettings
from scoring.triton.config import config_paths

logger = logging.getLogger(__name__)


class ModelControlError(RuntimeError):
    """Triton refused or failed a load, or a version did not become ready in time."""


@dataclass(frozen=True, slots=True)
class TritonControl:
    """Loads, warms up and unloads model versions on one Triton server."""

    settings: TritonSettings
    timeout_s: float = 120.0

    def _client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.settings.url)

    def config(self, target: str) -> mc.ModelConfig:
        """The model's config file of the serving profile (configs/cpu.pbtxt or config.pbtxt)."""
        paths = config_paths(Path(self.settings.model_repository) / target)
        path = paths["cpu"] if self.settings.config_name else paths["gpu"]
        return text_format.Parse(path.read_text(), mc.ModelConfig())

    def ready_versions(self, target: str) -> set[int]:
        """Versions of `target` that Triton reports READY."""
        client = self._client()
        try:
            index = client.get_model_repository_index(as_json=True)
        finally:
            client.close()
        return {
            int(m["version"])
            for m in index.get("models", [])
            if m.get("name") == target and m.get("state") == "READY" and m.get("version")
        }

    def load(self, target: str, versions: Iterable[int]) -> None:
        """Makes `versions` (and only them) the loaded versions of `target`; waits until ready.

        Raises:
            ModelControlError: a version folder is missing, Triton refused the load, or a version
                was not ready within `timeout_s`.
        """
        wanted = sorted(set(versions))
        if not wanted:
            raise ModelControlError(f"{target}: no version to load (use unload)")
        model_dir = Path(self.settings.model_repository) / target
        missing = [v for v in wanted if not (model_dir / str(v)).is_dir()]
        if missing:
            raise ModelControlError(f"{target}: no version folder {missing} in {model_dir}")
        config = self.config(target)
        config.ClearField("version_policy")
        config.version_policy.specific.versions.extend(wanted)
        started = time.monotonic()
        client = self._client()
        try:
            client.load_model(target, config=json_format.MessageToJson(config))
            deadline = time.monotonic() + self.timeout_s
            while not all(client.is_model_ready(target, str(v)) for v in wanted):
                if time.monotonic() > deadline:
                    raise ModelControlError(f"{target}: versions {wanted} not ready in time")
                time.sleep(0.05)
        except InferenceServerException as exc:
            raise ModelControlError(f"{target}: triton refused the load: {exc.message()}") from exc
        finally:
            client.close()
        logger.info(
            "triton_loaded target=%s versions=%s seconds=%.2f",
            target,
            wanted,
            time.monotonic() - started,
        )

    def unload(self, target: str) -> None:
        """Unloads every version of `target`."""
        client = self._client()
        try:
            client.unload_model(target)
        finally:
            client.close()

    def warm_up(self, target: str, version: int) -> None:
        """A few inferences of zero rows on `version`: TorchScript optimises on its first runs,
        and live traffic should not pay for that."""
        config = self.config(target)
        width = int(config.input[0].dims[0])
        client = self._client()
        try:
            for rows in WARMUP_ROWS:
                data = np.zeros((rows, width), dtype=np.float32)
                infer_input = grpcclient.InferInput(FEATURES_INPUT, list(data.shape), "FP32")
                infer_input.set_data_from_numpy(data)
                client.infer(
                    target,
                    [infer_input],
                    model_version=str(version),
                    outputs=[grpcclient.InferRequestedOutput(SCORE_OUTPUT)],
                    client_timeout=30.0,
                )
        except InferenceServerException as exc:
            raise ModelControlError(
                f"{target} v{version}: warm-up failed: {exc.message()}"
            ) from exc
        finally:
            client.close()
