"""The fault suite: the registry's infrastructure failing under it, through the real HTTP path,
with the real PostgreSQL, Redis and Celery worker behind proxies a test takes down (never the
machine's services themselves). For each fault: what a caller sees, and that nothing accepted is
lost. Bounded in time, loopback only.

- test_redis_down.py: Redis stopped (release cache pub/sub, Django cache, Celery broker).
- test_database_down.py: PostgreSQL stopped.
- test_worker_faults.py: the worker killed with jobs queued behind it; its Redis restarting.
- test_time_limits.py: Celery's soft and hard time limits on a real worker.
- test_provider_faults.py: model providers hanging, resetting, streaming garbage.

Faults tested elsewhere, next to the code they hold: the worker killed mid-shadow-job
(tests/runs/test_worker.py) and mid-eval-run (tests/evaluations/test_eval_worker.py); a full,
refusing or hanging outbox (tests/runs/test_shadows.py); the database down under the release
cache (tests/releases/test_cache.py) and the runtime views (tests/api/test_runtime.py); the
registry down or its stream cut under the SDK (tests/sdk/test_client_availability.py,
tests/sdk/test_client_stream.py).
"""
