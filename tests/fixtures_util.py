"""Locate the shared ground-truth fixtures (``<repo>/../shared/fixtures``) or skip the test.

Override the location with the environment variable ``MMVSSM_FIXTURES``. Tests call
``fixtures_dir()`` (or ``fixture_file('parity', 'vim_tiny64.pt')``); when the directory or the
file is absent the test is skipped with a message instead of failing.
"""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    """The fixtures directory, or ``pytest.skip`` when it is not available."""
    env = os.environ.get('MMVSSM_FIXTURES')
    path = Path(env) if env else REPO_ROOT.parent / 'shared' / 'fixtures'
    if not path.is_dir():
        pytest.skip(f'fixtures not found at {path} (set MMVSSM_FIXTURES to override)')
    return path


def fixture_file(*parts: str) -> Path:
    """A file under the fixtures directory, or ``pytest.skip`` when it is absent."""
    path = fixtures_dir().joinpath(*parts)
    if not path.is_file():
        pytest.skip(f'fixture file {path} not available')
    return path
