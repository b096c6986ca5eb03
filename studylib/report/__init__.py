"""From records to the paper: ``python -m studylib.report`` runs summary -> significance -> tables -> figures -> paper.

Reading the records: :mod:`summary` (one row per run, test set and direction), :mod:`significance` (paired bootstrap
against the reference). One module per part of the paper, each with its tables, figures and sentences:
:mod:`quality`, :mod:`cost`, :mod:`sweeps`, :mod:`students`, :mod:`benchmark`, :mod:`setup`. Writing them:
:mod:`tables`, :mod:`figures`, :mod:`paper`, with :mod:`markdown` and :mod:`plot` shared by all. :mod:`sweep` shows
one sweep in its ablation notebook.
"""
