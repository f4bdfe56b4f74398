"""The compute dtype of translation: float32, or bfloat16 matmuls where the CPU has them.

With "bfloat16" the inference model is built under Keras's `bfloat16` policy: its weights are
stored in bfloat16 (rounded once, as they are loaded), matmuls and GRU states are bfloat16, and
the attention softmax (`nmt.attention`), log-softmax and scores (`nmt.decoding`) are float32.
The numbers are those of training's `mixed_bfloat16` policy, which keeps float32 weights and
rounds them at every use; storing them rounded saves that cast at every decoding step (in
the plain graph about a third of a batch-64 search's time: the whole embedding table, the
GRU and output kernels, each step).
"auto" picks bfloat16 only where the CPU lists AVX512-BF16 or AMX (Linux /proc/cpuinfo);
elsewhere bfloat16 is emulated and float32 is faster. Imports no TensorFlow (the CLI checks
`--dtype` before TensorFlow loads).
"""

from __future__ import annotations

from pathlib import Path

DTYPES = ("float32", "bfloat16", "auto")
DEFAULT_DTYPE = "float32"
_POLICIES = {"float32": None, "bfloat16": "bfloat16"}


def check_dtype(dtype: str) -> str:
    """`dtype` if it is one of `DTYPES`; ValueError naming them otherwise."""
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}. Expected one of {list(DTYPES)}.")
    return dtype


def resolve_dtype(dtype: str) -> str:
    """"float32" or "bfloat16": `dtype` itself, or what "auto" means on this machine."""
    if check_dtype(dtype) != "auto":
        return dtype
    return "bfloat16" if native_bfloat16() is True else "float32"


def keras_policy(dtype: str) -> str | None:
    """The Keras dtype policy to build an inference model under (None: the default)."""
    return _POLICIES[resolve_dtype(dtype)]


def native_bfloat16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU flags list bfloat16 instructions; None when they cannot be read."""
    try:
        flags = Path(cpuinfo).read_text(errors="replace").split()
    except OSError:
        return None
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def build_inference_model(model_config, dtype: str):
    """The unbuilt-then-built model of `model_config` (`nmt.config.ModelConfig`) for
    translating in `dtype`, its weights created (to be overwritten by `load_weights`).

    In bfloat16 the recurrent kernels start from zeros instead of Keras's orthogonal
    initializer, which has no bfloat16 kernel (QR); they are loaded over anyway."""
    import keras

    from nmt.distribute import dtype_policy
    from nmt.model import make_model

    with dtype_policy(keras_policy(dtype)):
        model = make_model(model_config)
        if resolve_dtype(dtype) == "bfloat16":
            for layer in model._flatten_layers():
                if isinstance(layer, (keras.layers.GRUCell, keras.layers.LSTMCell)):
                    layer.recurrent_initializer = keras.initializers.Zeros()
        model.build()
    return model
