# The service's image: the Procfile's processes all run from it (compose.yaml picks the command).
# Built in two stages: the first installs the dependencies into a virtual environment, the second
# copies that and the code onto a clean slim base, with no compiler and no test dependencies.

FROM python:3.13-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /venv
WORKDIR /src
# The dependencies first (their layer is reused while only the code changes), then the code.
COPY pyproject.toml ./
COPY sdk/ ./sdk/
RUN /venv/bin/pip install ./sdk
COPY . .
RUN /venv/bin/pip install . \
 && /venv/bin/python -m compileall -q /src

FROM python:3.13-slim
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PROMPT_REGISTRY_ENV_FILE=/dev/null \
    PROMPT_REGISTRY_VAR_DIR=/var/lib/prompt-registry \
    STATIC_ROOT=/app/static \
    DEBUG=false
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin registry \
 && mkdir -p /var/lib/prompt-registry /tmp/promptregistry-metrics \
 && chown registry /var/lib/prompt-registry /tmp/promptregistry-metrics
COPY --from=build /venv /venv
COPY --from=build --chown=root:root /src /app
WORKDIR /app
# The static files, collected (and compressed) once at build; WhiteNoise serves them. The key is
# a throwaway one: collectstatic reads the settings, which refuse to start without a key.
RUN SECRET_KEY=build-only-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz \
    python manage.py collectstatic --no-input --verbosity 0
USER registry
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
CMD ["gunicorn", "config.wsgi:application", "--config", "gunicorn.conf.py"]
