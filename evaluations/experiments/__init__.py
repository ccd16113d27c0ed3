"""A/B results: a release's experiments and the results of one.

Modules: ``selectors`` (the reads: events, aggregates, the timeline), ``analysis`` (the judgement;
pure, on ``evaluations.statistics``), ``charts`` (the results page's SVG charts). Reads only:
nothing here changes a release.
"""
