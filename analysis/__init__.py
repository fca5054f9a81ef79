"""Analysis of the MSD benchmark's run store: tables, figures, claims and the HTML report.

Reads only the run store (``results/runs``: ``summary.json``, ``config.yaml``,
``metrics.jsonl``, ``predictions.parquet``) and the teacher cache, never a live model, so
every table and figure can be rebuilt anywhere the runs are (docs/architecture.md §2). Entry point:
``msd analyze all`` (:mod:`analysis.cli`).
"""
