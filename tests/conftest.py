import pytest

import fixq

ISAS = fixq.cpu_info()["supported"]
using_isa = fixq.using_isa


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once on every CPU path this machine supports."""
    with using_isa(request.param):
        yield request.param


@pytest.fixture(autouse=True, scope="session")
def plan_at_once():
    """qadd / qmul plan on their first call (not after a million outputs), so that every test that runs
    them exercises the SIMD plans; test_lazy_plan checks the deferral itself."""
    after = fixq._core._PLAN_AFTER
    fixq._core._PLAN_AFTER = 0
    yield
    fixq._core._PLAN_AFTER = after
