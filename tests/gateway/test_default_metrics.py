"""Per-feature default counts: rows whose value was missing, per (service, feature), and the
rows assembled per service, as the gateway's /metrics exposes them."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scoring.core.contract import contract_from_store
from scoring.gateway.prometheus import GatewayMetrics

from ..conftest import FeatureRepo


def samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(("scoring_feature_defaulted_rows", "scoring_assembled_rows"))
        and s.name.endswith("_total")
    }


def test_defaults_are_counted_once_per_row_and_feature(feature_repo_ready: FeatureRepo) -> None:
    contract = contract_from_store(feature_repo_ready.store(), "item_ranker_v1")
    vector = next(f for f in contract.features if f.is_vector)
    scalar = next(f for f in contract.features if not f.is_vector)
    full: dict[str, list[Any]] = {
        f.ref: [[0.5] * f.length] * 3 if f.is_vector else [1.0, 2.0, 3.0] for f in contract.features
    }
    # Row 0: the vector missing whole, row 1: one of its values NaN; row 2: complete. The
    # scalar is missing in rows 1 and 2.
    full[vector.ref] = [None, [0.5] * (vector.length - 1) + [float("nan")], [0.5] * vector.length]
    full[scalar.ref] = [1.0, None, float("nan")]
    assembled = contract.assemble(pd.DataFrame(full))
    metrics = GatewayMetrics()
    metrics.count_defaults(contract, assembled.indicators)
    metrics.count_defaults(contract, contract.defaults(2).indicators)  # a failed read: all
    metrics.count_defaults(contract, contract.defaults(0).indicators)  # nothing to count

    got = samples(metrics)
    service = contract.service
    assert got[("scoring_assembled_rows_total", (("service", service),))] == 5
    per_feature = {
        dict(labels)["feature"]: value
        for (name, labels), value in got.items()
        if name == "scoring_feature_defaulted_rows_total"
    }
    assert per_feature[vector.ref] == 2 + 2  # once per row, not once per column
    assert per_feature[scalar.ref] == 2 + 2
    others = [f.ref for f in contract.features if f.ref not in (vector.ref, scalar.ref)]
    assert all(per_feature[ref] == 2 for ref in others)  # the failed read only
    assert set(per_feature) == set(contract.refs)
    # One set of label children per contract, made once.
    assert len(metrics._default_children) == 1
