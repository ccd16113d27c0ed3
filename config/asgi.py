"""The ASGI entry point: the process that serves release streams (decision 0029).

    uvicorn config.asgi:application --host 0.0.0.0 --port 8001 --timeout-graceful-shutdown 5

Every path is Django's: the release stream (``GET /api/v1/environments/{environment}/stream``)
through ``StreamHandler``, everything else through Django's own ASGI handler, so this process
can also serve the whole API (its sync views then run in threads, one per request, as Django
does under ASGI). The sync WSGI deployment (gunicorn, ``config.wsgi``) serves the rest and keeps
a stream working too, holding a worker for it.
"""

import os
import re
from contextlib import aclosing

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

from config.telemetry import telemetry_start  # noqa: E402

telemetry_start("prompt-registry-stream")  # when OTEL_EXPORTER_OTLP_ENDPOINT is set

from django.core.handlers.asgi import ASGIHandler  # noqa: E402  (Django is set up above)
from django.urls import reverse  # noqa: E402


class StreamHandler(ASGIHandler):
    """Django's ASGI handler less its per-request thread.

    ``ASGIHandler.__call__`` runs each request in a ``ThreadSensitiveContext``: the request's
    synchronous parts (the ``request_started`` receivers, sync middleware) get a thread of their
    own, kept until the request ends. For a stream, that is one idle thread per client for
    minutes. Here those parts share the process's one thread-sensitive thread instead; the
    stream's view (``api.stream``) does its own blocking work in the executor, and waits on the
    event loop."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def send_response(self, response, send):
        """A stream's events (``response.events``, set by ``api.stream``) are written as they
        come, each in one body message: Django's own loop passes every chunk through three
        generators more, a cost paid per client for every change. Anything else: Django's."""
        events = getattr(response, "events", None)
        if events is None:
            return await super().send_response(response, send)
        headers = [
            (name.encode("ascii"), value.encode("latin1")) for name, value in response.items()
        ]
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        # aclosing: a client that leaves (this task cancelled) ends the stream's generator at
        # once, and with it its slot and its place on the feed.
        async with aclosing(events):
            async for part in events:
                await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body"})


def _stream_path() -> re.Pattern[str]:
    """The stream's URL from the URLconf, with any environment name in it."""
    marker = "environment-name-here"
    path = reverse("stream", kwargs={"environment": marker})
    before, after = path.split(marker)
    return re.compile(re.escape(before) + "[^/]+" + re.escape(after))


STREAM_PATH = _stream_path()
stream_application = StreamHandler()


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        # Nothing to start or stop: the release streams' hub starts with the first stream.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http" and STREAM_PATH.fullmatch(scope["path"]):
        await stream_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
