#!/usr/bin/env python
"""`python train.py ...` from a checkout: the same as the installed `nmt-train`.

The command lives in `nmt/cli/train.py`; see `python train.py --help`.
"""

import sys

from nmt.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
