"""The web console for MLOps and feature engineers: models, actions, experiments, features and
serving on pages, with a JSON API under them (`scoring console`)."""

from scoring.console.app import create_app

__all__ = ["create_app"]
