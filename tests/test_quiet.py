"""nmt.quiet: TensorFlow's native start-up lines stay off the terminal, real errors do not."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_native_writes_inside_the_block_are_dropped_and_later_ones_kept():
    result = run_python(
        "import os, sys\n"
        "from nmt.quiet import native_stderr_captured\n"
        "with native_stderr_captured():\n"
        "    os.write(2, b'E0000 noise from C++\\n')\n"
        "    print('python noise', file=sys.stderr)\n"
        "os.write(2, b'after the block\\n')\n"
        "print('python after', file=sys.stderr)\n")
    assert result.returncode == 0
    assert result.stderr == "after the block\npython after\n"


def test_what_was_written_is_replayed_when_the_block_fails():
    result = run_python(
        "import os\n"
        "from nmt.quiet import native_stderr_captured\n"
        "with native_stderr_captured():\n"
        "    os.write(2, b'the real reason\\n')\n"
        "    raise SystemExit(3)\n")
    assert result.returncode == 3
    assert result.stderr == "the real reason\n"


def test_loading_tensorflow_prints_nothing_unless_verbose():
    quiet = run_python("from nmt.quiet import load_tensorflow\nload_tensorflow()\n"
                       "import tensorflow as tf\nprint(tf.constant(2.0).numpy() * 2)\n")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "4.0\n" and quiet.stderr == ""
    loud = run_python("from nmt.quiet import load_tensorflow\nload_tensorflow(verbose=True)\n")
    assert loud.returncode == 0
    assert loud.stderr.strip(), "verbose start-up should show TensorFlow's own lines"


def test_tensorflow_starts_without_matplotlib_which_still_imports_afterwards():
    result = run_python(
        "import sys\n"
        "from nmt.quiet import load_tensorflow\n"
        "load_tensorflow()\n"
        "print('matplotlib' in sys.modules)\n"
        "import matplotlib.pyplot\n"
        "print(matplotlib.pyplot.figure is not None)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


def test_train_and_study_stay_quiet_when_tensorflow_logs_later():
    """train.py and the study log their own progress at INFO through the root logger. Once
    TensorFlow has started quietly, its later INFO lines must not ride along: saving a
    checkpoint logs "Sharding callback duration" through absl; an XLA compilation logs
    nothing either. The user's environment has no TF_CPP_MIN_LOG_LEVEL here (CI exports
    one)."""
    code = ("import argparse, logging, sys, tempfile\n"
            "logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stderr)\n"
            "from nmt.cli.train import start_tensorflow\n"
            "start_tensorflow(argparse.Namespace(verbose=False, distribute='none',\n"
            "                                    collective_timeout=60))\n"
            "import tensorflow as tf\n"
            "tf.train.Checkpoint(v=tf.Variable(1.0)).save(tempfile.mkdtemp() + '/step')\n"
            "double = tf.function(lambda x: tf.tanh(x) * 2.0 + x, jit_compile=True)\n"
            "print(float(double(tf.ones([3])).numpy().sum()))\n"
            "logging.getLogger('nmt').info('our own line')\n")
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                           text=True, timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert float(quiet.stdout) > 0 and quiet.stderr == "our own line\n"
    loud = subprocess.run([sys.executable, "-c", code.replace("verbose=False", "verbose=True")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert loud.returncode == 0, loud.stderr
    assert "Sharding callback duration" in loud.stderr, "--verbose shows TensorFlow's lines"


def test_onednns_line_about_an_unsupported_data_type_is_caught_at_start_up():
    """oneDNN logs "oneDNN supports DT_BOOL only on platforms with AVX-512" at ERROR level
    (so TF_CPP_MIN_LOG_LEVEL=2, which CI and many users set, shows it) the first time a graph
    transposes booleans or int64s, once per process. `load_tensorflow` provokes it while
    TensorFlow's output is captured; `--verbose` (and a plain TensorFlow process) still show
    it where oneDNN prints it at all (an AVX-512 CPU such as the one CI runs on)."""
    graph = ("import tensorflow as tf\n"
             "flip = tf.function(lambda x: tf.transpose(x))\n"
             "print(flip(tf.constant([[True, False]])).numpy().ravel().tolist())\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    runs = {verbose: subprocess.run(
        [sys.executable, "-c", f"from nmt.quiet import load_tensorflow\n"
                               f"load_tensorflow(verbose={verbose})\n" + graph],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
        for verbose in (False, True)}
    for run in runs.values():
        assert run.returncode == 0, run.stderr
        assert run.stdout.split("\n")[0] == "[True, False]"
    assert runs[False].stderr == ""
    if "avx512f" in Path("/proc/cpuinfo").read_text():
        assert "oneDNN supports DT_" in runs[True].stderr
