"""Test-suite set-up: shared helpers importable as ``tests.<module>`` or ``<module>``."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
for p in (os.path.dirname(HERE), HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import pytest  # noqa: E402


def _visualizer_classes():
    try:
        from mmengine.visualization import Visualizer
    except ImportError:
        return []
    classes, todo = [], [Visualizer]
    while todo:
        cls = todo.pop()
        classes.append(cls)
        todo.extend(cls.__subclasses__())
    return classes


@pytest.fixture(autouse=True)
def _fresh_mmengine_visualizers():
    """Tools build their visualizer by name (``'visualizer'``) and mmengine keeps one instance per
    name and process: without this, a visualizer left by an earlier in-process test (another
    toolbox's type) would be handed to the next tool's hooks. One tool per process (as users run
    them) never shares."""
    for cls in _visualizer_classes():
        cls._instance_dict.clear()
    yield
    for cls in _visualizer_classes():
        cls._instance_dict.clear()
