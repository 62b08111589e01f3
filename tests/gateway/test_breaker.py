"""The circuit breaker's states, and the config a repair reload sends."""

from __future__ import annotations

from scoring.gateway.breaker import Breakers, CircuitBreaker, repair_token

from .helpers import Clock


def test_opens_after_threshold_failures_in_a_row_only() -> None:
    breaker = CircuitBreaker(threshold=3)
    assert not breaker.failure("timeout") and not breaker.failure("timeout")
    breaker.success()  # an answer in between: the count starts again
    assert not breaker.failure("timeout") and not breaker.failure("timeout")
    assert breaker.allow()
    assert breaker.failure("timeout")  # the third in a row opens it
    assert not breaker.allow() and breaker.reason == "timeout"
    assert not breaker.failure("again"), "already open: opening is reported once"
    assert breaker.opened_count == 1


def test_trip_keeps_the_first_reason_and_success_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=5, clock=clock)
    breaker.trip("triton not ready")
    clock.now += 2.5
    breaker.trip("another")
    assert breaker.reason == "triton not ready" and breaker.open_for_s() == 2.5
    breaker.success()
    assert breaker.allow() and breaker.failures == 0 and breaker.open_for_s() == 0.0


def test_breakers_are_per_model() -> None:
    breakers = Breakers(threshold=1)
    breakers["item_ranker"].failure("down")
    assert breakers.open_models() == ["item_ranker"]
    assert breakers["activity_ranker"].allow()
    breakers.trip_all(["item_ranker", "activity_ranker"], "triton not ready")
    assert sorted(breakers.open_models()) == ["activity_ranker", "item_ranker"]
    assert breakers["item_ranker"].reason == "down"


def test_repair_token_changes_only_a_parameter() -> None:
    config: dict[str, object] = {
        "name": "item_ranker",
        "version_policy": {"specific": {"versions": ["2"]}},
        "parameters": {"feature_service": {"string_value": "item_ranker_v1"}},
    }
    repaired = repair_token(config, "gw-1")
    assert repaired["parameters"] == {
        "feature_service": {"string_value": "item_ranker_v1"},
        "repair_token": {"string_value": "gw-1"},
    }
    assert repaired["version_policy"] == config["version_policy"]
    assert "repair_token" not in config["parameters"]  # type: ignore[operator]
    assert repair_token({"name": "m"}, "t")["parameters"] == {"repair_token": {"string_value": "t"}}
