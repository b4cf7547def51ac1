import pytest


@pytest.fixture(scope="session")
def human(human):
    """The agent engine's tests start from a given day-0 state: the packaged human set without
    the untreated history (tests/model/test_history.py tests it) and with the reactivation
    these tests were powered for (k_dr 5e-5/day, the packaged value before the history)."""
    return human.replace(history_days=0.0, k_dr=5e-5)
