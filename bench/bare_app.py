"""The benchmark's baseline: one Django view returning a constant JSON document, no middleware.

Served by gunicorn with the same settings as the project (its settings: bench/bare_settings.py),
so the ratio measures what the resolve path adds over Django itself. ``BARE_BODY_BYTES`` sets the
document's size (the resolve answer's); ``BARE_CONTENT_LENGTH`` makes it say its length
(``bench/resolve.py --bare-length``).
"""

from __future__ import annotations

import json
import os

from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path

SIZE = int(os.environ.get("BARE_BODY_BYTES", "1024"))
BODY = json.dumps({"padding": "x" * max(SIZE - 16, 0)}).encode()
# With BARE_CONTENT_LENGTH set, the answer says its length, as the project's answers do: without
# middleware, Django sends none, and gunicorn then sends the answer chunked (a system call more).
HEADERS = {"Content-Length": str(len(BODY))} if os.environ.get("BARE_CONTENT_LENGTH") else {}


def constant(request):
    return HttpResponse(BODY, content_type="application/json", headers=HEADERS)


urlpatterns = [path("bare", constant)]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bare_settings")
application = get_wsgi_application()
