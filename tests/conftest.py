import contextlib

import pytest

import fixq
from fixq import _core

ISAS = fixq.cpu_info()["supported"]


@contextlib.contextmanager
def using_isa(name):
    before = _core.selected_isa()
    _core.select_isa(name)
    try:
        yield
    finally:
        _core.select_isa(before)


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once on every CPU path this machine supports."""
    with using_isa(request.param):
        yield request.param
