"""``promptregistry``: the registry from a terminal or a CI job (docs/cli.md).

    promptregistry pull prompts/                 # the registry's prompts as YAML files
    promptregistry push prompts/ --dry-run       # what importing them would change
    promptregistry diff prompts/                 # exit 1 when they differ from the registry
    promptregistry eval support.refund-reply draft --gate production
    promptregistry release promote production support.refund-reply --reason "Gates passed."
    promptregistry status production

Modules: ``config`` (where the URL and key come from), ``registry`` (the REST API over httpx),
``output`` (text or ``--json``), and the commands: ``files`` (pull, push, diff), ``evaluate``
(eval) and ``releases`` (release, status); ``main`` parses the command line. Only the standard
library (argparse, tomllib) and httpx, which the SDK depends on anyway: the command needs no
dependency of its own, and nothing here uses the SDK's core or imports the server.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
