import pytest

import fixq

ISAS = fixq.cpu_info()["supported"]
using_isa = fixq.using_isa


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once on every CPU path this machine supports."""
    with using_isa(request.param):
        yield request.param
