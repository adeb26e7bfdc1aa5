import subprocess
import sys

import pytest

# Page faults of the last 4 of 12 rounds of short-lived 48 MB temporaries (the pattern of a forward
# pass; the tuned heap settles within ~6 rounds), in a fresh process so the test runner's own
# allocator stays untouched.
SCRIPT = """
import resource, sys, torch
from mlcore.allocator import tune_glibc_malloc
if sys.argv[1] == "tuned":
    assert tune_glibc_malloc()
x = torch.ones(12 * 1024 * 1024)
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = (x * 2 + 1).exp() - x
    del y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[-4:]))
"""


def _faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return int(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_tuned_malloc_reuses_freed_blocks_instead_of_refaulting() -> None:
    default, tuned = _faults("default"), _faults("tuned")
    assert default > 100_000  # every 48 MB temporary re-faulted from the kernel, 4 kB at a time
    assert tuned < default / 20, (default, tuned)
