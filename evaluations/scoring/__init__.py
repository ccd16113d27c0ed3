"""Scoring a model's answer against a case's expectation.

Modules: ``scorers`` (every scorer and the expectation check; pure). Imports the registry's pure
modules and ``runs.comparison``; no other feature of evaluations.
"""
