import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def vectors(root):
    import json

    return json.loads((root / "docs" / "wire-vectors.json").read_text())["vectors"]
