"""Evaluations: golden datasets, scorers, eval runs, promotion gates, canary analysis, A/B results."""
