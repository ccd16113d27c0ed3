"""Canary analysis: a policy, and a look at the canary every beat tick that advances it, holds it
or rolls it back.

Modules: ``policy`` (validation and derived times; pure), ``metrics`` (the figures of one look),
``services`` (start, attach, look, resume, stop). Imports ``evaluations.statistics``,
``releases.services`` (every release change) and ``runs`` (the calls).
"""
