"""`pip install .` gives a working lutc package (the editable install is what the test venv itself uses)."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import lutc

ROOT = Path(lutc.__file__).parent


def test_every_subpackage_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if rel.parts and rel.parts[0] in ("tests", "build", ".venv") or any(p.startswith(".") for p in rel.parts):
            continue
        name = ".".join(("lutc",) + rel.parts)
        assert f'"{name}"' in text, f"{name} is missing from [tool.setuptools] packages"


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv(tmp_path):
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist,
                    ROOT], check=True, cwd=tmp_path)
    wheel = next(dist.glob("lutc-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    py = venv / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], check=True)
    # the fresh venv has only lutc; lend it this venv's dependencies (not its editable lutc) to run the demo graph
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"])
    code = ("import lutc, pathlib; assert 'site-packages' in lutc.__file__, lutc.__file__;"
            "assert (pathlib.Path(lutc.__file__).parent / 'codegen/cpu/lut_kernels.c').exists();"
            "from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights;"
            "s = LlamaSpec(num_layers=1); import numpy as np;"
            "y = lutc.compile(build_llama(s, random_llama_weights(s)))(np.zeros((1, 3), np.int64));"
            "print(lutc.__file__, y.shape)")
    out = subprocess.run([py, "-c", code], check=True, capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    assert "(1, 3, 512)" in out
