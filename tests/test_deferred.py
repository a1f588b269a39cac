"""A deferred module (bayesmer.deferred) loads on first use and is then the real module."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import inspect, sys, types
from bayesmer.deferred import DeferredModule, defer

assert "colorsys" not in sys.modules
assert defer("colorsys") and not defer("colorsys")  # once
assert not defer("sys") and not defer("no_such_module_here")
import colorsys
assert type(colorsys) is DeferredModule
inspect.getmodule(inspect)  # reads every module's __file__: no use of colorsys
assert type(sys.modules["colorsys"]) is DeferredModule
assert colorsys.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)  # first use: loaded
real = sys.modules["colorsys"]
assert type(real) is types.ModuleType and real.rgb_to_hsv is colorsys.rgb_to_hsv
import colorsys as again
assert again is real and "hls_to_rgb" in dir(colorsys)
print("ok")
"""


def test_a_deferred_module_loads_on_first_use():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
