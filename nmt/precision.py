"""The compute dtype of translation: float32, or bfloat16 matmuls where the CPU has them.

With "bfloat16" the model is built under Keras's `mixed_bfloat16` policy (as training with
`mixed_precision` runs it): weights stay float32, matmuls and GRU states are bfloat16, and the
attention softmax (`nmt.attention`), log-softmax and scores (`nmt.decoding`) are float32.
"auto" picks bfloat16 only where the CPU lists AVX512-BF16 or AMX (Linux /proc/cpuinfo);
elsewhere bfloat16 is emulated and float32 is faster. Imports no TensorFlow (the CLI checks
`--dtype` before TensorFlow loads).
"""

from __future__ import annotations

from pathlib import Path

DTYPES = ("float32", "bfloat16", "auto")
DEFAULT_DTYPE = "float32"
_POLICIES = {"float32": None, "bfloat16": "mixed_bfloat16"}


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
