"""The package imports, under one path per module, from the checkout and from a built wheel."""

import os
import subprocess
import sys
import zipfile

import rtdecoder.kernels
import rtdecoder.transport


def test_checkout_maps_kernels_and_transport_under_rtdecoder(root):
    assert os.path.dirname(rtdecoder.kernels.__file__) == str(root / "kernels")
    assert os.path.dirname(rtdecoder.transport.__file__) == str(root / "transport")


def test_wheel_installs_and_imports_without_the_checkout(root, tmp_path):
    import shutil

    src = tmp_path / "src"  # build from a copy, so that no build/ directory is left in the checkout
    for name in ("rtdecoder", "kernels", "transport"):
        shutil.copytree(root / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True, capture_output=True, timeout=300)
    (whl,) = wheels.glob("rtdecoder-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "rtdecoder/kernels/ingest.py" in names and "rtdecoder/transport/udp.py" in names
    assert "rtdecoder/decoders/union_find.py" in names
    assert not any(n.startswith(("kernels/", "transport/")) for n in names)  # no top-level 'kernels'
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(whl)],
                   check=True, capture_output=True, timeout=300)
    code = ("import rtdecoder.kernels.ingest as k, rtdecoder.transport.udp as u, rtdecoder.engine;"
            "import importlib.util as iu; from rtdecoder import decoders;"
            "assert decoders.names() == ('matching', 'union_find', 'matching_correlated'), decoders.names();"
            "print(k.__file__); print(u.__file__); print(iu.find_spec('kernels') is None)")
    env = {**os.environ, "PYTHONPATH": str(target)}
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    kfile, ufile, no_top_level = r.stdout.split()
    assert kfile.startswith(str(target)) and ufile.startswith(str(target))
    assert no_top_level == "True"
