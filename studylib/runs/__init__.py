"""One module per notebook family: its parameter classes (defaults = the CPU smoke profile), the code it runs, and
the checks its record passes. :data:`NOTEBOOKS` says which class each notebook's runs take."""

from __future__ import annotations

from studylib.runs.params import NOTEBOOKS, params_class  # noqa: F401  (the registry lives with the params files)
