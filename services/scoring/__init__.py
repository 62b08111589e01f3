"""Scoring platform: feature contracts, the ranking gateway, the trainer and the model registry."""

import os as _os

# Importing Feast switches prometheus_client into its multiprocess mode for the whole process
# (feast.metrics points PROMETHEUS_MULTIPROC_DIR at a temporary feast_metrics_* folder at
# import, for its gunicorn feature server): every metric update then goes through a
# memory-mapped file, a lock and a getpid call. The gateway is one process with its own metrics
# endpoint, so prometheus_client picks its value class here, before Feast is imported, and a
# process started by one that imported Feast does not inherit that folder (which its parent
# deletes on exit). A multiprocess folder set by the operator is kept.
for _var in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
    if _os.path.basename(_os.environ.get(_var, "").rstrip("/")).startswith("feast_metrics_"):
        del _os.environ[_var]

import prometheus_client.values  # noqa: E402, F401
