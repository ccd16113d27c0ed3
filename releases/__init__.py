"""Releases: what is served, to whom, and the way back.

Owns environments, the release of each prompt in each environment (stable, canary, experiment,
shadows), the append-only audit log of release events, the traffic-split bucketing, the pure
resolution of a request to a version, and the in-process release cache that serves it.

Imports ``registry`` and nothing above it (runs, evaluations, api). Where a release must consult
evaluations (promotion gates), ``gates.py`` defines a protocol that evaluations registers into.
"""
