"""Promotion gates: what a version must have shown on its golden sets before it is released.

Modules: ``services`` (the gates' writes and reads, and the check ``EvaluationsConfig.ready()``
registers with ``releases.gates``). Imports ``evalruns`` (a gate run's status) and the registry.
"""
