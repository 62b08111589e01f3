"""`python -m scoring.gateway`: run the gateway with settings from the environment."""

from scoring.core.logging import configure_logging
from scoring.core.settings import Settings
from scoring.gateway.server import run


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json, background=True)
    run(settings)


if __name__ == "__main__":
    main()
