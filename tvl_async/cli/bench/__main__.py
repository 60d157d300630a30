"""``python -m tvl_async.cli.bench``: the same as ``tvl-async bench``."""

from __future__ import annotations

import sys

from tvl_async.cli.bench.command import main

if __name__ == "__main__":
    sys.exit(main())
