"""`msp_jax.runtime`: glibc keeps freed memory under `reuse_freed_memory` and hands it back on
`release_freed_memory` (measured on the process's resident set, in a fresh subprocess so that this one's
malloc settings stay as they are)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, resource
    from msp_jax import runtime

    def resident_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    assert runtime.reuse_freed_memory()
    blocks = [bytearray(b"x" * (64 << 20)) for _ in range(8)]   # 512 MB touched, from the heap
    keep = bytearray(b"y" * (1 << 20))                          # allocated after them: pins the heap's top
    before = resident_mb()
    del blocks
    kept = resident_mb()
    released = runtime.release_freed_memory()
    print(json.dumps({"before": before, "kept": kept, "after": resident_mb(), "released": released}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings are Linux-only")
def test_freed_memory_is_kept_for_reuse_then_released_between_stages():
  out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
  sizes = json.loads(out.stdout.strip().splitlines()[-1])
  assert sizes["kept"] > sizes["before"] - 64, sizes      # freed, but still resident (no trim, no munmap)
  assert sizes["released"] and sizes["after"] < sizes["kept"] - 400, sizes  # the free pages went back
