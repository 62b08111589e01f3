#!/usr/bin/env python
"""Container health check of the gateway: exit 0 only if grpc health reports SERVING.

The gateway reports SERVING only when Triton, the feature store and every target are usable,
so "healthy" means "can rank". The port comes from the same settings as the server's.
"""

import sys

from grpc_health.v1 import health_pb2

from scoring.core.settings import Settings
from scoring.gateway.process import health_status


def main() -> int:
    port = Settings().gateway.port
    status = health_status(f"127.0.0.1:{port}", timeout_s=3.0)
    statuses = health_pb2.HealthCheckResponse.ServingStatus
    if status == statuses.Value("SERVING"):
        return 0
    state = "unreachable" if status is None else statuses.Name(status)
    sys.stderr.write(f"gateway 127.0.0.1:{port}: {state}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
