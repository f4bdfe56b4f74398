"""nmt: neural machine translation with attention you can choose and see."""

__version__ = "0.1.0"
