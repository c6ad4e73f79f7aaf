"""Markers of the mm tests."""


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: full-size FLOPs counts (run by default; deselect with -m "not slow")')
