"""Triton configs: both profiles from one source, committed configs current with the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from scoring.core.contract import contract_from_store
from scoring.core.model_io import (
    CONTRIB_OUTPUT,
    FEATURES_INPUT,
    PARAM_INTRA_OP_THREADS,
    PURCHASE_OUTPUT,
    SCORE_OUTPUT,
)
from scoring.core.targets import TARGETS
from scoring.trainer.train import has_purchase_label, labels_path, model_spec
from scoring.triton.config import (
    ModelSpec,
    build_config,
    config_paths,
    render,
    write_configs,
)

ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("user_behavior", "item_popularity", "price")
SPEC = ModelSpec("item_ranker", 19, "item_ranker_v1", "abc123", groups=GROUPS)


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def test_gpu_profile_is_libtorch_on_gpu() -> None:
    cfg = parse(render(SPEC, "gpu"))
    assert cfg.platform == "pytorch_libtorch"
    assert not cfg.backend
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU


def test_cpu_profile_is_the_torchscript_python_backend() -> None:
    cfg = parse(render(SPEC, "cpu"))
    assert cfg.backend == "torchscript"
    assert not cfg.platform
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_profiles_share_everything_but_runtime() -> None:
    gpu, cpu = build_config(SPEC, "gpu"), build_config(SPEC, "cpu")
    for cfg in (gpu, cpu):
        cfg.ClearField("platform")
        cfg.ClearField("backend")
        cfg.ClearField("instance_group")
    assert gpu == cpu
    assert gpu.input[0].name == FEATURES_INPUT and list(gpu.input[0].dims) == [19]
    assert gpu.output[0].name == SCORE_OUTPUT
    assert gpu.parameters["feature_schema_hash"].string_value == "abc123"
    assert gpu.parameters["INTRA_OP_THREAD_COUNT"].string_value == "1"  # both: one torch thread


def test_outputs_and_feature_groups_come_from_one_spec() -> None:
    cfg = build_config(SPEC, "cpu")
    assert [(o.name, list(o.dims)) for o in cfg.output] == [
        (SCORE_OUTPUT, [1]),
        (CONTRIB_OUTPUT, [len(GROUPS)]),
    ]
    assert cfg.parameters["feature_groups"].string_value == "user_behavior,item_popularity,price"
    multi = build_config(ModelSpec("m", 4, "s", "h", groups=GROUPS, purchase=True), "gpu")
    assert [o.name for o in multi.output] == [SCORE_OUTPUT, CONTRIB_OUTPUT, PURCHASE_OUTPUT]


def test_the_cpu_backend_reads_the_model_interface_names() -> None:
    # The backend runs inside Triton, so it spells the names out rather than importing them.
    source = (ROOT / "services/scoring/triton/backend/model.py").read_text()
    assert f'INPUT_NAME = "{FEATURES_INPUT}"' in source
    assert f'.get("{PARAM_INTRA_OP_THREADS}", {{}})' in source


def test_write_configs_is_idempotent(tmp_path: Path) -> None:
    assert len(write_configs(tmp_path / "m", SPEC)) == 2
    assert write_configs(tmp_path / "m", SPEC) == []
    assert not list((tmp_path / "m").rglob(".*tmp*"))


def test_committed_configs_match_the_feature_contract(feature_repo_ready: Any) -> None:
    store = feature_repo_ready.store()
    for target in TARGETS.values():
        contract = contract_from_store(store, target.feature_service)
        # A basket target trains on baskets (one task); the others on their impressions.
        purchase = target.cart_feature_service is None and has_purchase_label(
            labels_path(feature_repo_ready.path, target)
        )
        spec = model_spec(target, contract, purchase)
        for profile, path in config_paths(ROOT / "model_repository" / target.name).items():
            committed = path.relative_to(ROOT)
            assert path.read_text() == render(spec, profile), (
                f"{committed} is stale: run `scoring train` (it regenerates configs)"
            )
