#!/usr/bin/env python
"""Build the ``support`` example pair (all-MiniLM-L6-v2 text classifier) into a cache folder.

    python scripts/make_text_example.py [--out DIR] [--seed 13]

The code lives in ``sentinel/examples/support_build.py`` so that ``sentinel demo --example
support`` can build the pair from an installed package too; its docstring says what is built.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from sentinel.examples.support_build import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
