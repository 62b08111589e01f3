"""A trained version served by real Triton returns every output of the TorchScript model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from scoring.core.contract import contract_from_store
from scoring.core.model_io import CONTRIB_OUTPUT, FEATURES_INPUT, SCORE_OUTPUT
from scoring.core.targets import TARGETS
from scoring.trainer.examples import training_data
from scoring.trainer.export import MODEL_FILE, list_versions, read_manifest
from scoring.trainer.train import labels_path

pytestmark = [pytest.mark.triton]


def infer(url: str, model: str, rows: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    client = grpcclient.InferenceServerClient(url)
    try:
        infer_input = grpcclient.InferInput(FEATURES_INPUT, list(rows.shape), "FP32")
        infer_input.set_data_from_numpy(rows)
        result = client.infer(
            model, [infer_input], outputs=[grpcclient.InferRequestedOutput(o) for o in outputs]
        )
        return {o: result.as_numpy(o) for o in outputs}
    finally:
        client.close()


@pytest.mark.parametrize("target_name", list(TARGETS))
def test_triton_returns_score_and_contributions_of_the_model(
    triton: Any, feature_repo_ready: Any, model_repository: Path, target_name: str
) -> None:
    target = TARGETS[target_name]
    store = feature_repo_ready.store()
    contract = contract_from_store(store, target.feature_service)
    # The target's own training rows: impressions, or baskets with their carts.
    labels = labels_path(feature_repo_ready.path, target)
    frame = training_data(store, target, contract, labels, None).frame
    rows = contract.assemble(frame.tail(300)).matrix
    model_dir = model_repository / target_name
    manifest = read_manifest(model_dir, list_versions(model_dir)[-1])
    outputs = manifest["model"]["outputs"]
    model = torch.jit.load(str(model_dir / str(manifest["version"]) / MODEL_FILE))
    with torch.no_grad():
        expected = dict(
            zip(outputs, (t.numpy() for t in model(torch.from_numpy(rows))), strict=True)
        )

    config = grpcclient.InferenceServerClient(triton.settings.url)
    try:
        params = config.get_model_config(target_name).config.parameters
    finally:
        config.close()
    groups = params["feature_groups"].string_value.split(",")
    assert groups == manifest["model"]["feature_groups"]

    # Uneven concurrent requests: dynamic batching concatenates them, each gets its own rows.
    cuts = [0, 1, 40, 41, 140, 300]
    parts = [rows[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    with ThreadPoolExecutor(len(parts)) as pool:
        answers = list(
            pool.map(lambda p: infer(triton.settings.url, target_name, p, outputs), parts)
        )
    for name in outputs:
        got = np.concatenate([a[name] for a in answers])
        assert got.shape == expected[name].shape
        np.testing.assert_allclose(got, expected[name], rtol=0, atol=1e-5, err_msg=name)
    assert expected[CONTRIB_OUTPUT].shape == (len(rows), len(groups))
    # The contributions explain the score: baseline logit + their sum = the click logit.
    logit = np.log(expected[SCORE_OUTPUT][:, 0]) - np.log1p(-expected[SCORE_OUTPUT][:, 0])
    explained = manifest["model"]["contrib_baseline_logit"] + expected[CONTRIB_OUTPUT].sum(1)
    np.testing.assert_allclose(explained, logit, rtol=0, atol=1e-3)
