"""The served model's interface: what the trainer exports, Triton serves and the gateway calls.

One input, `features__0` [N, width] float32, the columns of the feature contract in order.
Outputs, by index as libtorch names them (`<name>__<index>`; the CPU profile uses the same
names): `score__0` [N, 1] click probability (the ranking score), `contrib__1` [N, G]
click-logit contributions of the G feature groups listed, in order, in the `feature_groups`
parameter (logit = baseline logit + their sum), and `purchase__2` [N, 1] purchase probability
when the model has a purchase head.

The config parameters carry the feature contract a version was trained on, so that the gateway
refuses a version whose contract is not the live one.
"""

from __future__ import annotations

FEATURES_INPUT = "features__0"
SCORE_OUTPUT = "score__0"
CONTRIB_OUTPUT = "contrib__1"
PURCHASE_OUTPUT = "purchase__2"

PARAM_FEATURE_SERVICE = "feature_service"
PARAM_SCHEMA_HASH = "feature_schema_hash"
PARAM_FEATURE_GROUPS = "feature_groups"
# Torch intra-op threads per model instance: the libtorch backend's own parameter, read by the
# CPU backend too (scoring/triton/backend/model.py spells it out: it runs inside Triton).
PARAM_INTRA_OP_THREADS = "INTRA_OP_THREAD_COUNT"

# Batch sizes of the warm-up inferences a new version gets before traffic: TorchScript
# optimises on its first runs, and a caller's deadline should not pay for that.
WARMUP_ROWS = (1, 16, 128, 1, 16, 128)
