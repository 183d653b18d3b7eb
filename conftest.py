"""Root pytest configuration: the verl adapter's doctests need verl, which lives in its own venv."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("verl") else ["src/cadence/integrations/verl.py"]
