import jax
import pytest

import dormancy_model as dm
from dormancy_model.units import DAYS_PER_YEAR

HISTORY_DAYS = (0.0, 84.0, 168.0)


@pytest.fixture(scope="session")
def history_observation(model, human):
    """One agent run shared by tests/model/test_history.py and test_marrow_lesions.py (one
    run per session): untreated, 2,000 replicates (fast method, homogeneous traits) through the
    packaged 2-year history at a high hazard (k_dr 2.25e-5, 300 dormant cells), counts at days
    0, 84 and 168, 5 years. Returns (parameters, AgentResult)."""
    p = human.replace(k_dr=2.25e-5, dormant_initial=300.0)
    res = dm.simulate_agents(model, p, dm.get_schedule("observation"), n_replicates=2000,
                             key=jax.random.PRNGKey(3), t1=5 * DAYS_PER_YEAR,
                             options=dm.AgentOptions(method="fast", count_days=HISTORY_DAYS))
    assert res.ok, res.message
    return p, res
