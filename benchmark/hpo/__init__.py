"""Hyper-parameter searches (Optuna) whose trials are ordinary suite runs.

``spec`` reads search files, ``space`` holds the method-conditional spaces, ``samplers``
the sampler/pruner registries, ``storage`` the study storages, ``prepare`` data + teacher,
``objective`` one trial, ``recovery`` interrupted trials, ``study`` the search loop and
workers, ``best``/``compare``/``plots`` the outputs, ``cli`` the ``msd hpo`` commands.
``docs/hpo.md`` is the user guide.
"""
