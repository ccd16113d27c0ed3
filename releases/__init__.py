"""Releases: what is served, to whom, and the way back.

Owns environments, the release of each prompt in each environment (stable, canary, experiment,
shadows), the append-only audit log of release events, the traffic-split bucketing, the pure
resolution of a request to a version, and the in-process release cache that serves it; and the
governance of changes: who may make them (``rights``), change requests in environments that
require review (``services.change_requests``, ``services.review``) and schedules applied by beat
(``services.schedule``, ``tasks``).

Imports ``registry`` and nothing above it (runs, evaluations, api). Where a release must consult
evaluations, it defines a protocol that evaluations registers into: ``gates.py`` (promotion
gates) and ``steering.py`` (whether something else, a canary analysis, steers a release).
"""
