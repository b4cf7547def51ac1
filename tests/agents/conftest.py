import pytest


@pytest.fixture(scope="session")
def human(human):
    """The agent engine's tests start from a given day-0 state: the packaged human set without
    the untreated history (tests/model/test_history.py tests it) and with the reactivation
    these tests were powered for (k_dr 5e-5/day, the packaged value before the history), at the
    load and detection they were written for: 100 dormant cells, aspirate_fraction 3.6e-3 and
    Poisson aspirates (the packaged loads are ~1e5 cells since aspirate_fraction is
    aspirate_cells / marrow_cells; tests/model/test_aspirate_law.py tests the new law)."""
    return human.replace(history_days=0.0, k_dr=5e-5, dormant_initial=100.0,
                         aspirate_fraction=3.6e-3, aspirate_dispersion=0.0)
