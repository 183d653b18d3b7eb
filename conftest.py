"""Root pytest configuration: the verl adapter's doctests need verl, which lives in its own venv."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("verl") else ["src/cadence/integrations/verl.py",
                                                             "src/cadence/integrations/verl_regimen.py"]
if importlib.util.find_spec("trl") is None:  # the TRL lab's doctests need the trl extra
    collect_ignore += [f"src/cadence/labs/trl/{m}.py" for m in ("workload", "warmstart", "experiment", "bench")]
