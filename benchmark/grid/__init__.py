"""Experiment grids: YAML files expanded into cells, run as a DAG locally or on Slurm.

``spec`` parses grid files, ``cells``/``configs`` expand them into resolved run configs,
``dag`` orders the work (data → teachers → teacher caches → students), ``runner`` executes
it through a registered launcher (``local``, ``slurm``), ``status`` reads cell states from
the run store. See docs/grid.md.
"""
