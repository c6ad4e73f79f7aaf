"""Markers of the mm tests."""


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: full-size FLOPs counts (set MMVSSM_SLOW_TESTS=1)')
