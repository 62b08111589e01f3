"""`python -m scoring.gateway`: run the gateway with settings from the environment.

The gateway's wiring: the one place where its parts meet their implementations (the model
registry's store); the gateway's modules know the registry only as a `RoutingSource`.

With `GatewaySettings.workers` > 1 this process is the parent of that many workers
(`scoring.gateway.workers`), each started as `python -m scoring.gateway --worker I`.
"""

import sys

from scoring.core.logging import configure_logging
from scoring.core.settings import Settings
from scoring.gateway.server import run
from scoring.gateway.workers import supervise, worker_index, worker_settings
from scoring.registry.lazy import LazyRegistry


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json, background=True)
    worker = worker_index(sys.argv[1:])
    if worker is None and settings.gateway.workers > 1:
        raise SystemExit(supervise(settings))
    if worker is not None:
        settings = worker_settings(settings, worker)
    with LazyRegistry(settings.registry.url) as registry:
        run(settings, registry, worker=worker)


if __name__ == "__main__":
    main()
