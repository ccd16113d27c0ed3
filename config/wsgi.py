import os

from django.core.wsgi import get_wsgi_application

from config.telemetry import telemetry_start

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()
# Traces, when OTEL_EXPORTER_OTLP_ENDPOINT is set (config/telemetry.py). Loaded before gunicorn
# forks (preload_app), the exporter's thread starts again in each worker (the SDK sees to it).
telemetry_start("prompt-registry-web")
