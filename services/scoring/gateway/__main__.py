"""`python -m scoring.gateway`: run the gateway with settings from the environment."""

import asyncio

from scoring.core.logging import configure_logging
from scoring.core.settings import Settings
from scoring.gateway.server import serve


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json, background=True)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
