#!/usr/bin/env python
"""Container health check of the gateway: exit 0 only if grpc health reports SERVING.

The gateway reports SERVING only when Triton, the feature store and every target are usable,
so "healthy" means "can rank". The port and TLS come from the same settings as the server's:
with SCORING_TLS__ENABLED it checks the certificate against SCORING_TLS__CA_FILE for
SCORING_TLS__SERVER_NAME (the name in the gateway's certificate, as it connects to 127.0.0.1),
presenting SCORING_TLS__CLIENT_CERT_FILE under mutual TLS. Health needs no caller credentials.
"""

import sys

from grpc_health.v1 import health_pb2

from scoring.core.settings import Settings
from scoring.gateway.process import health_status


def main() -> int:
    settings = Settings()
    port = settings.gateway.port
    status = health_status(f"127.0.0.1:{port}", timeout_s=3.0, tls=settings.tls)
    statuses = health_pb2.HealthCheckResponse.ServingStatus
    if status == statuses.Value("SERVING"):
        return 0
    state = "unreachable" if status is None else statuses.Name(status)
    sys.stderr.write(f"gateway 127.0.0.1:{port}: {state}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
