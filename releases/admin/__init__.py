"""The admin for release managers (STYLE R13): the release board per environment, every verb as a
permissioned confirmation page that shows the target state and what traffic moves before it
applies, the release history timeline per release and per prompt, and the read-only audit log.

Modules, in dependency order: ``display`` (how states read), ``traffic`` (who moves, pure),
``verbs`` (inputs per verb, and the ``releases.services`` change class each builds),
``views`` (the pages), ``requests`` (change requests: the queue and a request's page), ``hub`` (the release panels on a prompt's page), ``board``
(``ReleaseAdmin``), ``events`` (``ReleaseEventAdmin``, ``EnvironmentAdmin``). Templates live in
``templates/admin/releases/release/``. Every change goes through ``releases.services``.

Permissions: the verbs need ``releases.deploy_release``, rollback needs
``releases.rollback_release``, reading needs ``releases.view_release``; the "Release managers"
group (migration 0003) has them, and only view permissions on prompts.
"""

from .board import ReleaseAdmin
from .events import EnvironmentAdmin, ReleaseEventAdmin
from .requests import ChangeRequestAdmin

__all__ = ["ChangeRequestAdmin", "EnvironmentAdmin", "ReleaseAdmin", "ReleaseEventAdmin"]
