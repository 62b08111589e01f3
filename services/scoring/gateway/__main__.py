"""`python -m scoring.gateway`: run the gateway with settings from the environment.

The gateway's wiring: the one place where its parts meet their implementations (the model
registry's store); the gateway's modules know the registry only as a `RoutingSource`.
"""

from scoring.core.logging import configure_logging
from scoring.core.settings import Settings
from scoring.gateway.server import run
from scoring.registry.lazy import LazyRegistry


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json, background=True)
    with LazyRegistry(settings.registry.url) as registry:
        run(settings, registry)


if __name__ == "__main__":
    main()
