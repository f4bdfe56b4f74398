"""Shared test setup: keep TensorFlow's C++ start-up chatter out of the test output."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # must be set before tensorflow is imported
