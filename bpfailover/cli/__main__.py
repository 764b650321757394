"""``python -m bpfailover.cli``: the same as the ``bpfailover`` console command."""

import sys

from bpfailover.cli import main

sys.exit(main())
