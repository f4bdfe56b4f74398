#!/usr/bin/env python
"""Where a training step of the released recipe spends its time, by kind of op.

    python bench/profile_train.py --data-dir ../shared/corpora/multi30k

Builds the released config's model and optimizer as `train.py` does (mixed bfloat16, no
XLA: `configs/multi30k-de-en.json`), compiles every bucket shape once, then runs `--steps`
real training steps under the TensorFlow profiler and sums the time of every op TensorFlow
ran (the "tf_Compute" lines of the trace), grouped by kind (`KINDS`). `bench/bench_train.py`
says the step reaches about 29 % of the bfloat16 matmul peak; this says where the rest goes.
Writes bench/results/profile_train.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_train import DEFAULT_CONFIG, bench_config  # noqa: E402
from bench.common import RESULTS, write_results  # noqa: E402

# Op types by kind (oneDNN's "_Mkl" and fused "_" versions count as the plain op); anything
# else is "other".
KINDS = {
    "matmul": ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "FusedMatMul",
               "NativeFusedMatMul", "Einsum"),
    "cast (mixed precision)": ("Cast",),
    # their own time, without the ops they run
    "loops, calls and the executor": ("While", "StatelessWhile", "If", "StatelessIf",
                                      "PartitionedCall", "StatefulPartitionedCall", "Process",
                                      "Enter", "Exit", "Merge", "Switch",
                                      "NextIteration", "LoopCond", "Identity"),
    "tensor arrays (per-step outputs)": (
        "TensorListSetItem", "TensorListGetItem", "TensorListStack", "TensorListFromTensor",
        "TensorListPushBack", "TensorListPopBack", "TensorListConcatLists",
        "TensorListReserve", "TensorListElementShape", "TensorListLength", "TensorArrayV3",
        "TensorArrayWriteV3", "TensorArrayReadV3", "TensorArrayGatherV3",
        "TensorArrayScatterV3", "TensorArraySizeV3"),
    "embedding lookups and their gradients": ("GatherV2", "ResourceGather",
                                              "UnsortedSegmentSum", "ScatterNd",
                                              "TensorScatterAdd", "TensorScatterUpdate"),
    "elementwise (gates, activations, dropout)": (
        "Add", "AddV2", "AddN", "Sub", "Mul", "RealDiv", "Sigmoid", "Tanh", "SigmoidGrad",
        "TanhGrad", "Relu", "Select", "SelectV2", "Neg", "Square", "Sqrt", "Rsqrt", "Exp",
        "Log", "Maximum", "Minimum", "Equal", "NotEqual", "Greater", "Less", "LogicalAnd",
        "LogicalNot", "Reciprocal", "BiasAdd", "BiasAddGrad", "ZerosLike", "OnesLike", "Fill",
        "StatelessRandomUniformV2", "FloorMod", "Pow"),
    "softmax, log-softmax and reductions": ("Softmax", "LogSoftmax", "Sum", "Max", "Mean",
                                            "Prod", "ArgMax", "SoftmaxCrossEntropyWithLogits"),
    "optimizer (Adam, clipping, variables)": ("ResourceApplyAdam", "AssignVariableOp",
                                              "AssignAddVariableOp", "AssignSubVariableOp",
                                              "ReadVariableOp", "L2Loss", "ClipByValue"),
    "layout (transpose, reshape, concat, split, slice)": (
        "Transpose", "Reshape", "ConcatV2", "Split", "SplitV", "Slice", "StridedSlice",
        "StridedSliceGrad", "Pack", "Unpack", "Tile", "ExpandDims", "Squeeze", "ReverseV2",
        "BroadcastTo", "Pad", "Shape", "Range"),
}


# Events within an op's kernel (its threadpool work): their time stays the op's.
INSIDE_OPS = ("ParallelFor",)


def kind_of(op_type: str) -> str:
    """The `KINDS` entry of a TensorFlow op type, or "other"."""
    base = op_type.removeprefix("_Mkl").removeprefix("_")
    return next((kind for kind, types in KINDS.items() if base in types), "other")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--data-dir", help="local Multi30k folder (no download)")
    parser.add_argument("--steps", type=int, default=20, help="training steps profiled")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    from nmt.training_data import prepare_data, with_vocab_sizes

    config = bench_config(args.config, args.data_dir, args.tiny)
    with tempfile.TemporaryDirectory() as run_dir:
        data = prepare_data(config, Path(run_dir))
    config = with_vocab_sizes(config, data)
    payload = profile(config, data, args.steps)
    rows = [[kind, round(entry["ms_per_step"], 1), f"{entry['share']:.1%}", entry["ops"],
             ", ".join(entry["top_types"])] for kind, entry in payload["kinds"].items()]
    _, md_path = write_results("profile_train", payload, [
        "kind of op", "ms per step (both cores)", "share of op time", "ops per step",
        "largest op types"], rows, Path(args.results_dir))
    print(md_path.read_text())
    print("cores' time:", ", ".join(f"{name} {share:.1%}"
                                   for name, share in payload["budget"].items()))
    return 0


def profile(config, data, steps: int) -> dict:
    """Profile `steps` training steps after compiling every shape; op time by kind."""
    import numpy as np
    import tensorflow as tf

    from bench.bench_train import flops_per_target_token, matmul_peak, warmed_up_step

    step, batches, _ = warmed_up_step(config, data, config.train.jit_compile,
                                      config.train.mixed_precision, steps)
    source_lengths = data.train.source.row_lengths().numpy()
    target_lengths = data.train.target.row_lengths().numpy() - 1
    flops = flops_per_target_token(config.model, source_lengths.mean() / target_lengths.mean(),
                                   float(source_lengths.mean()))
    tokens = sum(int(np.count_nonzero(batch[1])) for batch in batches) / len(batches)
    peak = matmul_peak(dtype="bfloat16" if config.train.mixed_precision else "float32")
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for batch in batches:
            logs = step(iter([batch]))
        float(logs["loss"])
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        times, counts = op_times(next(Path(logdir).rglob("*.xplane.pb")))
    by_kind: dict[str, dict] = collections.defaultdict(lambda: {"ms": 0.0, "ops": 0,
                                                                "types": collections.Counter()})
    for op_type, milliseconds in times.items():
        entry = by_kind[kind_of(op_type)]
        entry["ms"] += milliseconds
        entry["ops"] += counts[op_type]
        entry["types"][op_type] += milliseconds
    total = sum(times.values())
    kinds = {kind: {"ms_per_step": entry["ms"] / len(batches), "share": entry["ms"] / total,
                    "ops": round(entry["ops"] / len(batches)),
                    "top_types": [name for name, _ in entry["types"].most_common(4)]}
             for kind, entry in sorted(by_kind.items(), key=lambda item: -item[1]["ms"])}
    wall_ms, op_ms = 1000 * wall / len(batches), total / len(batches)
    return {"steps": len(batches), "wall_ms_per_step": wall_ms, "op_ms_per_step": op_ms,
            "precision": "mixed_bfloat16" if config.train.mixed_precision else "float32",
            "jit_compile": config.train.jit_compile, "target_tokens_per_step": tokens,
            "matmul_gflop_per_step": flops * tokens / 1e9, "matmul_peak_gflops": peak,
            "budget": core_time_budget(wall_ms, op_ms, kinds["matmul"]["ms_per_step"],
                                       flops * tokens / 1e9, peak), "kinds": kinds}


def core_time_budget(wall_ms: float, op_ms: float, matmul_ms: float, matmul_gflop: float,
                     peak_gflops: float) -> dict[str, float]:
    """Shares of the cores' time in a step (wall x cores): what the matmuls would take at
    the measured peak (the step's "fraction of peak"), the rest of their time, the other
    ops, and time no op ran."""
    cores = os.cpu_count() or 1
    available = wall_ms * cores
    at_peak = 1000 * matmul_gflop / peak_gflops * cores  # the peak is of all cores together
    return {"matmuls at peak": at_peak / available,
            "matmuls beyond peak": (matmul_ms - at_peak) / available,
            "other ops": (op_ms - matmul_ms) / available,
            "no op running": (available - op_ms) / available}


def op_times(xplane: Path) -> tuple[collections.Counter, collections.Counter]:
    """Milliseconds and counts per op type over the trace's TensorFlow op lines; each event's
    own time, without the events nested in it (a While loop's time is its overhead, not the
    ops of its body)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(xplane.read_bytes())
    times, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if line.name.startswith("tf_Compute"):
                events = [(event.offset_ps, event.duration_ps,
                           names.get(event.metadata_id, "?").split(":")[-1])
                          for event in line.events]
                events = [event for event in events if event[2] not in INSIDE_OPS]
                for op_type, picoseconds in exclusive_times(events):
                    times[op_type] += picoseconds / 1e9
                    counts[op_type] += 1
    return times, counts


def exclusive_times(events: list[tuple[int, int, str]]) -> list[tuple[str, int]]:
    """(name, own duration) of (start, duration, name) events of one line, where an event
    that starts inside another is nested in it and taken out of its time."""
    events = sorted(events, key=lambda event: (event[0], -event[1]))
    own = [duration for _, duration, _ in events]
    open_events: list[tuple[int, int]] = []  # (end, index)
    for index, (start, duration, _) in enumerate(events):
        while open_events and open_events[-1][0] <= start:
            open_events.pop()
        if open_events:  # only the part inside its parent (an async op may outlast it)
            parent_end, parent = open_events[-1]
            own[parent] -= min(duration, parent_end - start)
        open_events.append((start + duration, index))
    return [(name, own[index]) for index, (_, _, name) in enumerate(events)]


if __name__ == "__main__":
    sys.exit(main())
