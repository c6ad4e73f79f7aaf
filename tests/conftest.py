"""Test-suite set-up: shared helpers importable as ``tests.<module>`` or ``<module>``."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
for p in (os.path.dirname(HERE), HERE):
    if p not in sys.path:
        sys.path.insert(0, p)
