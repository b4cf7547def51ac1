"""Property-based fuzz of the study reader: mutated study files (cells replaced by NaN/inf
strings, huge numbers, quotes, BOMs, duplicated rows, random bytes) give a valid `Study` or an
`InputError`, never another exception."""

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dormancy_model.errors import InputError
from dormancy_model.fitting.study import Study, load_study

STUDY = b"""[study]
name = "tiny"
species = "mouse"
body_weight_g = 25.0

[arms.vehicle]
schedule = "mouse-vehicle"

[arms.hcq]
schedule = "mouse-hcq60-transient"
"""
BURDEN = b"""# comment
mouse_id,arm,day,residual_cells,detection_limit,sampled_fraction
v1,vehicle,14,120,1,0.1
v2,vehicle,28,300,1,0.1
h1,hcq,14,0.5,1,0.1
h2,hcq,28,40,1,
"""
SURVIVAL = b"""mouse_id,arm,day,event
v3,vehicle,90,1
v4,vehicle,120,0
h3,hcq,150,1
"""
FILES = {"study.toml": STUDY, "burden.csv": BURDEN, "survival.csv": SURVIVAL}
TOKENS = [b"", b",", b"nan", b"NaN", b"inf", b"-inf", b"1e400", b"-1", b"0", b"1e-320",
          b"\"", b"\"a,b\"", b"\n", b"\r\n", b"#", b"\xef\xbb\xbf", b"\xff\xfe", b"\x00",
          b"vehicle", b"hcq", b"v1", b"99999999999999999999999", b"2", b"0.5", b"=", b"[",
          b"mouse-hcq60-chronic", b"rat", b"0.025"]


@st.composite
def study_files(draw):
    files = dict(FILES)
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(sorted(files)))
        data = bytearray(files[name])
        kind = draw(st.sampled_from(["splice", "splice", "duplicate line", "bom", "random"]))
        if kind == "random":
            data = bytearray(draw(st.binary(max_size=120)))
        elif kind == "bom":
            data = bytearray(b"\xef\xbb\xbf") + data
        elif kind == "duplicate line":
            lines = bytes(data).splitlines(keepends=True) or [b""]
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
            data = bytearray(b"".join(lines))
        else:
            i = draw(st.integers(0, len(data)))
            j = draw(st.integers(i, min(len(data), i + 6)))
            data[i:j] = draw(st.sampled_from(TOKENS))
        files[name] = bytes(data)
    return files


_DIR = Path(tempfile.mkdtemp(prefix="study-fuzz-"))


@settings(max_examples=800, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(files=study_files())
def test_study_files_load_or_raise_input_error(files):
    for name, data in files.items():
        (_DIR / name).write_bytes(data)
    try:
        st_ = load_study(_DIR)
    except InputError as e:
        assert "\n" not in str(e) and str(e).startswith(str(_DIR))
        return
    assert isinstance(st_, Study)
    b, s = st_.burden, st_.survival
    assert np.all(np.isfinite(b.day)) and np.all(b.day >= 0) and np.all(b.cells >= 0)
    assert np.all(b.detection_limit > 0) and np.all((b.sampled_fraction > 0)
                                                   & (b.sampled_fraction <= 1))
    assert np.all(s.day > 0) and set(np.unique(s.event)) <= {0, 1}
    assert 0.010 <= st_.body_weight_kg <= 0.080
    assert len(set(s.mouse_id)) == s.mouse_id.size
    pairs = list(zip(b.mouse_id, b.day, strict=True))
    assert len(set(pairs)) == len(pairs)  # one count per mouse and day
