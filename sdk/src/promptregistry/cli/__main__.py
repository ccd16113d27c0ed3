"""``python -m promptregistry.cli``: the ``promptregistry`` command without its script."""

from __future__ import annotations

import sys

from .main import main

sys.exit(main())
