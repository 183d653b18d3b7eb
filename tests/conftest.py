"""Test-wide settings: under CI, hypothesis runs a fixed (derandomized) set of examples."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
