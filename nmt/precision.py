"""The compute dtype of translation: float32, or bfloat16 matmuls where the CPU has them.

With "bfloat16" the inference model is built under Keras's `bfloat16` policy: its weights are
stored in bfloat16 (rounded once, as they are loaded), matmuls and GRU states are bfloat16, and
the attention softmax (`nmt.attention`), log-softmax and scores (`nmt.decoding`) are float32.
The numbers are those of training's `mixed_bfloat16` policy, which keeps float32 weights and
rounds them at every use; storing them rounded saves that cast at every decoding step (in
the plain graph about a third of a batch-64 search's time: the whole embedding table, the
GRU and output kernels, each step).
The output layer of a bfloat16 recurrent model computes its logits less a constant
(`nmt.model.BFLOAT16_LOGIT_SHIFT`), where bfloat16 rounds more finely.

"auto" (translate.py's default; `serve` and `Translator.load` default to float32)
translates in float32 and hands searches of `compiled_search.BFLOAT16_GRAPH_HYPOTHESES` or
more hypotheses (rows x beam) to a second model in bfloat16, built on first use, where the
CPU lists AVX512-BF16 or AMX (Linux /proc/cpuinfo): float32 with XLA is the fastest for a
few sentences, bfloat16 in oneDNN's graph for a batch (bench/bench_translate.py).
Elsewhere bfloat16 is emulated and "auto" is float32 throughout. Imports no TensorFlow (the
CLI checks `--dtype` before TensorFlow loads).
"""

from __future__ import annotations

from pathlib import Path

DTYPES = ("float32", "bfloat16", "auto")
DEFAULT_DTYPE = "auto"  # of translate.py; Translator.load's is float32
SERVE_DTYPE = "float32"  # of `translate.py serve`, whose batches mix clients' requests
_POLICIES = {"float32": None, "bfloat16": "bfloat16"}


def check_dtype(dtype: str) -> str:
    """`dtype` if it is one of `DTYPES`; ValueError naming them otherwise."""
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}. Expected one of {list(DTYPES)}.")
    return dtype


def search_dtypes(dtype: str) -> tuple[str, str | None]:
    """What `dtype` means on this machine: the dtype of the translator's model, and that of
    the second model its large searches run on (None: there is none, see above)."""
    if check_dtype(dtype) != "auto":
        return dtype, None
    return "float32", "bfloat16" if native_bfloat16() is True else None


def native_bfloat16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU flags list bfloat16 instructions; None when they cannot be read."""
    try:
        flags = Path(cpuinfo).read_text(errors="replace").split()
    except OSError:
        return None
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def build_inference_model(model_config, dtype: str):
    """The unbuilt-then-built model of `model_config` (`nmt.config.ModelConfig`) for
    translating in `dtype` ("float32" or "bfloat16"), its weights created (to be overwritten
    by `load_weights`).

    In bfloat16 the recurrent kernels start from zeros instead of Keras's orthogonal
    initializer, which has no bfloat16 kernel (QR); they are loaded over anyway."""
    import keras

    from nmt.distribute import dtype_policy
    from nmt.model import make_model

    if dtype not in _POLICIES:
        raise ValueError(f"Unknown model dtype {dtype!r}. Expected one of {list(_POLICIES)}.")
    with dtype_policy(_POLICIES[dtype]):
        model = make_model(model_config)
        if dtype == "bfloat16":
            for layer in model._flatten_layers():
                if isinstance(layer, (keras.layers.GRUCell, keras.layers.LSTMCell)):
                    layer.recurrent_initializer = keras.initializers.Zeros()
        model.build()
    return model
