"""The benchmark's baseline: one Django view returning a constant JSON document, no middleware.

Served by gunicorn with the same settings as the project (its settings: bench/bare_settings.py), so the ratio measures what the resolve
path adds over Django itself. ``BARE_BODY_BYTES`` sets the document's size (the resolve answer's).
"""

from __future__ import annotations

import json
import os

from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path

SIZE = int(os.environ.get("BARE_BODY_BYTES", "1024"))
BODY = json.dumps({"padding": "x" * max(SIZE - 16, 0)}).encode()


def constant(request):
    return HttpResponse(BODY, content_type="application/json")


urlpatterns = [path("bare", constant)]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bare_settings")
application = get_wsgi_application()
