"""`scoring.workflows` re-exports its public API (what the CLI, bench and console call)."""

from __future__ import annotations

from types import ModuleType

import scoring.workflows


def test_all_lists_every_public_name_the_package_holds() -> None:
    public = [
        name
        for name, value in vars(scoring.workflows).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    ]
    assert sorted(scoring.workflows.__all__) == sorted(public)
    assert scoring.workflows.__all__ == sorted(scoring.workflows.__all__)
    assert {"train_and_register", "bootstrap", "sync_triton", "build_promoter"} <= set(public)
