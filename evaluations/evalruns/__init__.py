"""Eval runs: a prompt version run over a dataset's cases by Celery tasks, and its report.

Modules: ``services`` (start, batch, cancel, resume, and the run lookups), ``report`` (the report
against the stable version), ``selectors`` (the failures the status page lists). Imports
``datasets``, ``scoring``, the registry, releases and runs; publishes its batches through
``evaluations.tasks``.
"""
