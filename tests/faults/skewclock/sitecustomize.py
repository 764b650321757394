"""TEST ONLY: a host whose wall clock is off by ``BPF_TEST_CLOCK_OFFSET`` seconds.

The fault suite puts this folder first on ``PYTHONPATH`` of one node's processes, so
Python runs it at start-up, before any bpfailover module is imported: every
``time.time()``/``time.time_ns()`` reading in that process (the report's ``sent_at``,
the simulated chain's slot clock, log timestamps) is shifted, as on a node whose NTP
is broken. Monotonic clocks are left alone, as they would be.
"""

import os
import time

_offset = float(os.environ.get("BPF_TEST_CLOCK_OFFSET") or 0.0)
if _offset:
    _wall = time.time
    _wall_ns = time.time_ns
    time.time = lambda: _wall() + _offset
    time.time_ns = lambda: _wall_ns() + int(_offset * 1e9)
