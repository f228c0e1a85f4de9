import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# GPU code is tested on the GPU where there is one, else under numba's CUDA simulator (which must
# be chosen before numba is imported). NUMBA_ENABLE_CUDASIM=0 in the environment forces the GPU.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def vectors(root):
    import json

    return json.loads((root / "docs" / "wire-vectors.json").read_text())["vectors"]
