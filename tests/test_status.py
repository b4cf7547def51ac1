"""The status table: complete and unique, names round-trip, the combination rule, and that the
verbs report the right names."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dormancy_model as dm
from dormancy_model import status as S
from dormancy_model.model.integrate import finite_status, solver_status

CONSTANTS = {k: v for k, v in vars(S).items()
             if k.isupper() and not k.startswith("_") and isinstance(v, int)}


def test_table_is_complete_and_unique():
    values = [c.value for c in S.TABLE]
    names = [c.name for c in S.TABLE]
    assert len(set(values)) == len(values) and len(set(names)) == len(names)
    assert set(values) == set(CONSTANTS.values())
    for k, v in CONSTANTS.items():
        assert S.BY_VALUE[v].name == k.lower(), k
    assert all(-128 <= v < 128 for v in values)  # stored as int8
    assert all(c.message and "\n" not in c.message for c in S.TABLE)
    assert S.TABLE[-1].value == S.OK  # lowest priority


def test_names_round_trip():
    for c in S.TABLE:
        assert S.code(S.name(c.value)) == c.value
    codes = np.array([[S.OK, S.NONFINITE], [S.SLOT_OVERFLOW, S.MISSING]], np.int8)
    assert S.names(codes).tolist() == [["ok", "nonfinite"], ["slot_overflow", "missing"]]
    attrs = S.flag_attrs()
    assert dict(zip(attrs["flag_values"], attrs["flag_meanings"].split(), strict=True)) == {
        c.value: c.name for c in S.TABLE}
    assert S.message([S.OK, S.OK]) == "ok"
    assert S.message([S.MAX_STEPS, S.OK, S.DEGENERATE_PK]) == "; ".join(
        [S.BY_VALUE[S.DEGENERATE_PK].message, S.BY_VALUE[S.MAX_STEPS].message])


def test_combination_rule_is_the_priority_order():
    values = [c.value for c in S.TABLE]
    for a, b in itertools.product(values, values):
        want = a if values.index(a) <= values.index(b) else b  # earlier in the table wins
        assert S.combine(a, b) == want == S.combine(b, a)
    assert S.combine(S.OK, S.MAX_EVENTS) == S.MAX_EVENTS  # OK is the identity
    rng = np.random.default_rng(0)
    codes = rng.choice(values, size=(5, 7)).astype(np.int8)
    folded = codes[:, 0]
    for j in range(1, codes.shape[1]):
        folded = S.combine(folded, codes[:, j])
    np.testing.assert_array_equal(S.reduce(codes, axis=1), folded)
    jitted = jax.jit(lambda c: (S.reduce(c, axis=1), S.combine(c[:, 0], c[:, 1])))(
        jnp.asarray(codes))
    np.testing.assert_array_equal(np.asarray(jitted[0]), folded)
    np.testing.assert_array_equal(np.asarray(jitted[1]), S.combine(codes[:, 0], codes[:, 1]))


def test_solver_status_keeps_the_solvers_code():
    import diffrax as dfx

    assert int(solver_status(dfx.RESULTS.successful)) == S.OK
    assert int(solver_status(dfx.RESULTS.max_steps_reached)) == S.MAX_STEPS
    bad = jnp.array([1.0, jnp.inf])
    assert int(finite_status(jnp.asarray(S.OK), bad)) == S.NONFINITE
    assert int(finite_status(jnp.asarray(S.MAX_STEPS), bad)) == S.MAX_STEPS  # inf-filled rows


@pytest.mark.parametrize("case, name", [("max_steps", "max_steps"),
                                        ("degenerate", "degenerate_pk"),
                                        ("nan", "nonfinite")])
def test_simulate_reports_the_name(model, human, case, name):
    opts, p = dm.SolverOptions(), human
    if case == "max_steps":
        opts = dm.SolverOptions(max_steps=20)
    elif case == "degenerate":
        p = human.replace(hcq_ke0=float(human["hcq_ka"]))
    else:  # a NaN rate (the solver rejects every step: the start check names the cause)
        p = human.replace(k_dr=float("nan"))
    tr = dm.simulate(model, p, dm.get_schedule("clever-combo"), years=0.25, options=opts)
    assert not tr.ok
    assert S.name(tr.status) == name
    assert tr.message == S.BY_NAME[name].message


def test_input_error_is_one_line_whatever_the_input():
    from dormancy_model.errors import InputError

    e = InputError("fuzz.toml", "defaults.\n", "unknown field\tx\x00")
    assert "\n" not in str(e) and "\t" not in str(e) and "\x00" not in str(e)
    assert str(e) == "fuzz.toml: defaults.\\n: unknown field\\tx\\x00"
    assert str(InputError("a.csv", "dose ± 5%", "ok")) == "a.csv: dose ± 5%: ok"
