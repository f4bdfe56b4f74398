#!/usr/bin/env python
"""`python translate.py ...` from a checkout: the same as the installed `nmt-translate`.

The command lives in `nmt/cli/translate.py`; see `python translate.py --help`.
"""

import sys

from nmt.cli.translate import main

if __name__ == "__main__":
    sys.exit(main())
