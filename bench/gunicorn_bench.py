"""gunicorn settings for the benchmarks: the project's gunicorn.conf.py as it is,
with a root logger added to its logging config when it lacks one (gunicorn
merges the dict into its defaults, whose root logger names a handler that the
project's dict replaces)."""

import runpy
from pathlib import Path

_project = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
globals().update({k: v for k, v in _project.items() if not k.startswith("__")})

if "logconfig_dict" in _project and "root" not in _project["logconfig_dict"]:
    logconfig_dict = {
        **_project["logconfig_dict"],
        "root": {"handlers": ["error"], "level": "WARNING"},
    }
