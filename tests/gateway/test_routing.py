"""Sticky experiment assignment: same user, same arm; the split follows the percentage."""

from __future__ import annotations

from scoring.gateway.routing import bucket


def test_assignment_is_sticky_and_depends_on_the_salt() -> None:
    assert bucket("item_ranker:v2", "u_1") == bucket("item_ranker:v2", "u_1")
    users = [f"u_{i}" for i in range(1000)]
    a = [bucket("salt-a", u) < 50 for u in users]
    b = [bucket("salt-b", u) < 50 for u in users]
    assert a != b  # a new salt reshuffles users


def test_observed_split_is_within_tolerance_of_the_configured_one() -> None:
    users = [f"u_{i:06d}" for i in range(20_000)]
    for percent in (1.0, 10.0, 25.0, 50.0):
        share = sum(bucket("exp", u) < percent for u in users) / len(users) * 100
        # Binomial sd at 50% over 20k users is 0.35 points; 1.5 points is > 4 sd.
        assert abs(share - percent) < 1.5, (percent, share)


def test_raising_the_percentage_only_moves_users_into_the_canary() -> None:
    users = [f"u_{i}" for i in range(5000)]
    at10 = {u for u in users if bucket("exp", u) < 10}
    at30 = {u for u in users if bucket("exp", u) < 30}
    assert at10 < at30
