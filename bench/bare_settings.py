"""Settings of the benchmark's baseline (``bench/bare_app.py``): Django with no middleware and no
apps. They are a settings module, not ``settings.configure()``, because gunicorn.conf.py reads the
settings' ``LOGGING`` when gunicorn starts, to log through it: the baseline then logs its access
lines as the project does, under the same gunicorn settings."""

DEBUG = False
SECRET_KEY = "bench-only"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "bare_app"
MIDDLEWARE: list[str] = []
INSTALLED_APPS: list[str] = []
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
}
