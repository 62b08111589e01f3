"""TorchScript export with a parity check, and atomic version writes into the model repository."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

MANIFEST = "manifest.json"
MODEL_FILE = "model.pt"
PARITY_TOLERANCE = 1e-5


class ExportParityError(RuntimeError):
    """TorchScript output differs from the eager model's beyond the tolerance."""


def _outputs(result: Any) -> list[torch.Tensor]:
    return list(result) if isinstance(result, tuple | list) else [result]


def export_torchscript(model: nn.Module, sample: torch.Tensor) -> tuple[bytes, float]:
    """Scripts `model`, reloads it and checks it against eager on `sample` (held-out rows).

    Every output (score, contributions, ...) is compared.

    Returns:
        The serialized TorchScript and the max abs difference seen over all outputs.

    Raises:
        ExportParityError: the difference exceeds PARITY_TOLERANCE.
    """
    model = model.eval()
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    reloaded = torch.jit.load(io.BytesIO(buffer.getvalue()))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        eager, scripted_out = _outputs(model(sample)), _outputs(reloaded(sample))
        if len(eager) != len(scripted_out):
            raise ExportParityError(f"{len(eager)} eager outputs, {len(scripted_out)} scripted")
        diff = max(float((a - b).abs().max()) for a, b in zip(eager, scripted_out, strict=True))
    if not diff <= PARITY_TOLERANCE:
        raise ExportParityError(
            f"eager vs TorchScript max abs diff {diff:.3g} > {PARITY_TOLERANCE}"
        )
    return buffer.getvalue(), diff


def weights_digest(model: nn.Module, schema_hash: str) -> str:
    """A digest of the parameters, buffers and feature schema: same digest, same model."""
    h = hashlib.sha256(schema_hash.encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def list_versions(model_dir: Path) -> list[int]:
    """Version numbers present in a Triton model folder (numeric sub-folders only)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def read_manifest(model_dir: Path, version: int) -> dict[str, Any]:
    return dict(json.loads((model_dir / str(version) / MANIFEST).read_text()))


TMP_PREFIX = ".tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(model_dir: Path) -> list[Path]:
    """Removes temp folders left by writers that died (killed mid-write); returns them."""
    removed = []
    for path in model_dir.glob(f"{TMP_PREFIX}*"):
        pid = path.name[len(TMP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def write_version(model_dir: Path, artifact: bytes, manifest: dict[str, Any]) -> int:
    """Writes model.pt + manifest.json as the next version, atomically.

    Everything goes into a hidden temp folder first (Triton ignores non-numeric folders), is
    fsynced, then renamed to `<model_dir>/<n>` and the folder entry fsynced: Triton never sees
    a half-written version, even if the writer is killed; its leftover temp folder is removed
    by the next write.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(model_dir)
    tmp = model_dir / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        version = (list_versions(model_dir) or [0])[-1] + 1
        manifest = {**manifest, "version": version}
        files = {
            MODEL_FILE: artifact,
            MANIFEST: (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
        }
        for name, data in files.items():
            with (tmp / name).open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        # rename() fails if the version appeared meanwhile: never overwrite a version.
        os.rename(tmp, model_dir / str(version))
        _fsync_dir(model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
