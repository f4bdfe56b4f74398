#!/usr/bin/env python
"""`python translate.py ...` from a checkout: the same as the installed `nmt-translate`.

The command lives in `nmt/cli/translate.py`; see `python translate.py --help`.
"""

from nmt.cli.translate import console_main

if __name__ == "__main__":
    console_main()
