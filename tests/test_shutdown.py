"""A process that imported bayesmer exits without walking its objects again (bayesmer.shutdown)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Fills the heap with tracked objects, times a full collection in the process, and times the
#: first collection the interpreter runs while exiting (a gc callback writing to stderr).
SCRIPT = """
import gc, os, time
{imports}
heap = [[i] for i in range(600_000)]  # tracked objects, alive until exit, like modules' objects
start = time.perf_counter()
gc.collect()
os.write(1, f"{{time.perf_counter() - start}}\\n".encode())
began = []

def timer(phase, info, clock=time.perf_counter, write=os.write, began=began):
    if phase == "start":
        began.append(clock())
    else:
        write(1, f"{{clock() - began[-1]}}\\n".encode())

gc.callbacks.append(timer)
"""


def _collections(imports: str, runs: int = 3) -> tuple[float, float]:
    """Seconds of a full collection in the process, and of the first one at its exit: the
    least of each over ``runs`` processes (one run's in-process collection, slowed by other
    work on the machine, once made the two look different without bayesmer: 0.049 s against
    0.033 s, where they are usually within 10-30%)."""
    timings = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT.format(imports=imports)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        seconds = [float(line) for line in out.stdout.split()]
        assert len(seconds) >= 2, out.stdout
        timings.append(seconds[:2])
    in_process, at_exit = zip(*timings, strict=True)
    return min(in_process), min(at_exit)


def test_exit_skips_collecting_the_objects_alive_at_exit():
    in_process, at_exit = _collections("import bayesmer")
    # the exit's collection walks none of the 600,000 objects (a few ms at most), where the
    # same collection in the process walks them all (tens of ms)
    assert at_exit < 0.2 * in_process, (in_process, at_exit)


def test_without_bayesmer_the_exit_collects_them():
    # the measurement itself: Python's own exit walks the heap as the collection in the process
    in_process, at_exit = _collections("")
    assert at_exit > 0.5 * in_process, (in_process, at_exit)
