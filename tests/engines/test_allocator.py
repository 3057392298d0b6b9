"""The training allocator settings: glibc stops handing freed activation memory back to the
system between steps, counted in the kernel's page faults of a fresh process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tea_med.engines import tune_cpu_allocator

#: 20 blocks of 8 MiB allocated, touched and freed, five times over, as a step's activations are;
#: prints the minor page faults of rounds 2-5
ROUNDS = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    if sys.argv[1] == "tuned":
        from tea_med.engines import tune_cpu_allocator
        assert tune_cpu_allocator()
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for r in range(5):
        if r == 1:
            start = faults()
        blocks = [np.ones(8 * 2**20, dtype=np.uint8) for _ in range(20)]
        del blocks
    print(faults() - start)
    """
)


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True, timeout=120
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_freed_step_memory_is_reused_instead_of_faulted_in_again() -> None:
    plain, tuned = _faults("plain"), _faults("tuned")
    # glibc's default maps round 1's blocks with mmap and unmaps them on free, then raises its
    # threshold and serves round 2 from new heap pages: 160 MiB / 4 KiB = 40,960 first touches.
    # Tuned, round 1 already fills the heap and every later round reuses its pages (0 measured).
    assert plain > 30_000
    assert tuned < plain / 20


def test_it_reports_whether_it_took_effect_and_can_be_called_again() -> None:
    expected = sys.platform.startswith("linux")
    assert tune_cpu_allocator() is expected
    assert tune_cpu_allocator() is expected
