"""nmt: neural machine translation with attention you can choose and see.

    from nmt import Translator
    translator = Translator.load("de-en")          # a shipped model, or a run directory
    translator.translate(["Ein Hund rennt."])[0].text   # 'A dog is running.'

`import nmt` is cheap: TensorFlow is imported (quietly, see `nmt.quiet`, and with the XLA
cache of `nmt.xla_cache`) only when `Translator` or `Translation` is first used.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Translation", "Translator"]


def __getattr__(name: str):
    if name in __all__:
        from nmt.quiet import load_tensorflow
        from nmt.xla_cache import enable_xla_cache

        enable_xla_cache()
        load_tensorflow()
        from nmt import translator

        return getattr(translator, name)
    raise AttributeError(f"module 'nmt' has no attribute '{name}'")
