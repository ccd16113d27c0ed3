"""Evaluations: golden datasets, scorers, eval runs, promotion gates, canary analysis, A/B results.

One subpackage per feature, as in ``releases`` (decision 0026): ``datasets``, ``scoring``,
``evalruns``, ``gates``, ``canary``, ``experiments``, and ``admin`` (the admin, one module per
feature). In each, ``services`` holds the writes and ``selectors`` the reads (STYLE R1). Shared by
the features: ``models``, ``statistics`` and ``chart_time`` (pure), ``tasks`` (the Celery
adapters; a task imports its service lazily, since the service publishes the task).

Dependency direction: imports ``registry``, ``releases`` and ``runs``, never ``api``; none of
them imports evaluations. Where they must consult it, they define a protocol that
``EvaluationsConfig.ready()`` registers into: promotion gates (``releases.gates``), change notices
(``releases.notices``) and the prompt page's panels (``registry.admin.hub``). Inside the app:
``scoring``, ``statistics`` and ``chart_time`` import no feature; ``datasets`` imports
``scoring``; ``evalruns`` imports ``datasets`` and ``scoring``; ``gates`` imports ``evalruns``;
``admin`` imports the features, and no feature imports ``admin``.
"""
