"""The admin of evaluations (STYLE R13), one module per feature, as the app's own packages are.

Modules: ``datasets`` (datasets and the case import), ``cases`` (a case's page, "Add to a
dataset" from a call), ``holdout`` and ``marks`` (what authors see of a case, shared),
``evalruns`` (eval runs and their results), ``playground`` (a version run from the admin, saved
as a case), ``gates`` (promotion gates), ``canary`` (canary
analyses), ``experiments`` (A/B results: pages with no model, added to the site's URLs) and
``hub`` (the panels on a prompt's page, registered by ``EvaluationsConfig.ready()``). Templates
live in ``templates/admin/evaluations/``. Every write goes through the feature's services.

Importing the modules here is what registers them: Django autodiscovers ``evaluations.admin``.
"""

from . import canary, cases, datasets, evalruns, experiments, gates, playground

__all__ = ["canary", "cases", "datasets", "evalruns", "experiments", "gates", "playground"]
