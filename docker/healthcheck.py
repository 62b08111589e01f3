#!/usr/bin/env python
"""Container health check: `scoring-healthcheck` for the gateway, `scoring-healthcheck console`
for the web console; exit 0 only when the process is healthy.

Gateway: grpc health must report SERVING. The gateway reports SERVING only when Triton, the
feature store and every target are usable, so "healthy" means "can rank". The port and TLS come
from the same settings as the server's: with SCORING_TLS__ENABLED it checks the certificate
against SCORING_TLS__CA_FILE for SCORING_TLS__SERVER_NAME (the name in the gateway's
certificate, as it connects to 127.0.0.1), presenting SCORING_TLS__CLIENT_CERT_FILE under mutual
TLS. Health needs no caller credentials.

Console: GET /healthz on 127.0.0.1 at SCORING_CONSOLE__PORT must answer 200 (the process serves
pages; a registry or Feast outage shows on the pages, it does not restart the console).
"""

import sys
import urllib.error
import urllib.request

from scoring.core.settings import Settings


def gateway(settings: Settings) -> int:
    from grpc_health.v1 import health_pb2

    from scoring.gateway.process import health_status

    port = settings.gateway.port
    status = health_status(f"127.0.0.1:{port}", timeout_s=3.0, tls=settings.tls)
    statuses = health_pb2.HealthCheckResponse.ServingStatus
    if status == statuses.Value("SERVING"):
        return 0
    state = "unreachable" if status is None else statuses.Name(status)
    sys.stderr.write(f"gateway 127.0.0.1:{port}: {state}\n")
    return 1


def console(settings: Settings) -> int:
    url = f"http://127.0.0.1:{settings.console.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3.0) as response:
            if response.status == 200:
                return 0
            state = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        state = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        state = f"unreachable ({exc})"
    sys.stderr.write(f"console {url}: {state}\n")
    return 1


def main(argv: list[str]) -> int:
    checks = {"gateway": gateway, "console": console}
    which = argv[0] if argv else "gateway"
    if len(argv) > 1 or which not in checks:
        sys.stderr.write(f"usage: scoring-healthcheck [{'|'.join(checks)}]\n")
        return 2
    return checks[which](Settings())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
