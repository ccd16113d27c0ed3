"""Golden datasets and their cases.

Modules: ``casefiles`` (JSONL and CSV case files read and checked; pure, the models import its
caps), ``selectors`` (reads of datasets and cases), ``services`` (writes: datasets, cases, the
all-or-nothing import). Imports the registry and ``evaluations.scoring`` (an expectation's check).
"""
