"""Latency of an exported TorchScript model by batch size, on the CPU and on a GPU where there
is one: what Triton's libtorch backend pays per batch, without the server around it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

BATCHES = (1, 10, 100, 500, 1000)


@dataclass(frozen=True, slots=True)
class LatencyRow:
    """One device and batch size, in milliseconds."""

    device: str
    batch: int
    compute_p50_ms: float  # the model call on inputs already on the device
    compute_p99_ms: float
    copy_p50_ms: float  # the same with the input copied in and every output copied out
    copy_p99_ms: float

    @property
    def rows_per_s(self) -> float:
        return self.batch / self.compute_p50_ms * 1000.0


def devices_here() -> list[str]:
    """The CPU (the baseline), and the first GPU where torch sees one."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _call(model: torch.jit.ScriptModule, x: torch.Tensor) -> object:
    return model(x)


def _call_with_copies(
    model: torch.jit.ScriptModule, x: torch.Tensor, device: torch.device
) -> object:
    """The model call as a server makes it: the input copied to the device, outputs back."""
    result = model(x.to(device))
    parts = result if isinstance(result, tuple | list) else (result,)
    return [p.cpu() for p in parts]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _cpu_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count, a process-wide setting, for a while; then the caller's."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _timed(
    calls: Sequence[Callable[[], object]], sync: Callable[[], None], repeats: int
) -> np.ndarray:
    """Milliseconds of each call (columns), `repeats` times (rows), the calls alternating so
    that every one of them sees the same machine conditions."""
    out = np.empty((repeats, len(calls)))
    for i in range(repeats):
        for j, fn in enumerate(calls):
            sync()
            started = time.perf_counter()
            fn()
            sync()
            out[i, j] = time.perf_counter() - started
    return out * 1000.0


def measure(
    model_path: Path,
    n_features: int,
    devices: Sequence[str],
    batches: Sequence[int] = BATCHES,
    repeats: int = 200,
    warmup: int = 20,
    threads: int = 1,
    seed: int = 0,
) -> list[LatencyRow]:
    """Times `model_path` on every device and batch size.

    Args:
        model_path: a TorchScript `model.pt` taking one float32 matrix (batch x n_features).
        n_features: the model's input width (the manifest's columns).
        devices: torch devices, e.g. ["cpu", "cuda"].
        batches: batch sizes (candidate rows per call).
        repeats: timed calls per device and batch size, after `warmup` untimed ones.
        threads: torch's intra-op CPU threads; 1 is how the generated Triton configs run it.

    Returns:
        One row per device and batch size, in that order.
    """
    generator = torch.Generator().manual_seed(seed)
    rows: list[LatencyRow] = []
    with _cpu_threads(threads), Progress(transient=True) as progress:
        task = progress.add_task("model latency", total=len(devices) * len(batches))
        for device in devices:
            dev = torch.device(device)
            model = torch.jit.load(str(model_path), map_location=dev)  # type: ignore[no-untyped-call]
            model.eval()

            sync = partial(_sync, dev)
            for batch in batches:
                # Values in [0, 1): an MLP's time does not depend on them.
                host = torch.rand(batch, n_features, generator=generator)
                compute = partial(_call, model, host.to(dev))
                with_copies = partial(_call_with_copies, model, host, dev)
                with torch.inference_mode():
                    for _ in range(warmup):
                        compute()
                        with_copies()
                    timed = _timed((compute, with_copies), sync, repeats)
                plain, copied = timed[:, 0], timed[:, 1]
                rows.append(
                    LatencyRow(
                        device,
                        batch,
                        float(np.percentile(plain, 50)),
                        float(np.percentile(plain, 99)),
                        float(np.percentile(copied, 50)),
                        float(np.percentile(copied, 99)),
                    )
                )
                progress.advance(task)
    return rows
