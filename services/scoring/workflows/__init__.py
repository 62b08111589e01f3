"""The platform's workflows as plain functions: train and register, bootstrap, sync Triton with the
registry, the demo's steps. The CLI, the benchmark, the tests and the web console call these.

Nothing here prints: progress goes to the callbacks a caller passes, results come back as
dataclasses for the caller to render, and a refused input raises `WorkflowError` naming it.
Heavy libraries (torch, Feast, pandas) are imported where a workflow runs, so that importing this
package stays cheap and works without torch (the gateway image).
"""

from scoring.workflows.checks import (
    TrainedVersion,
    WorkflowError,
    check_device,
    check_target,
    check_targets,
    open_feature_store,
    trained_version,
)
from scoring.workflows.data import (
    apply_features,
    build_features,
    generate_events,
    import_data,
    materialize_features,
)
from scoring.workflows.demo import (
    DemoAnswers,
    demo_activities,
    demo_data_config,
    demo_items,
    demo_requests,
)
from scoring.workflows.privacy import ForgetReport, Removed, expire_logs, forget_user
from scoring.workflows.serving import (
    BootstrapOutcome,
    Say,
    Servers,
    bootstrap,
    build_promoter,
    registry_actor,
    sync_triton,
)
from scoring.workflows.training import RegisteredModel, TrainProgress, train_and_register

__all__ = [
    "BootstrapOutcome",
    "DemoAnswers",
    "ForgetReport",
    "RegisteredModel",
    "Removed",
    "Say",
    "Servers",
    "TrainProgress",
    "TrainedVersion",
    "WorkflowError",
    "apply_features",
    "bootstrap",
    "build_features",
    "build_promoter",
    "check_device",
    "check_target",
    "check_targets",
    "demo_activities",
    "demo_data_config",
    "demo_items",
    "demo_requests",
    "expire_logs",
    "forget_user",
    "generate_events",
    "import_data",
    "materialize_features",
    "open_feature_store",
    "registry_actor",
    "sync_triton",
    "train_and_register",
    "trained_version",
]
