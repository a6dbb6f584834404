"""Kelpie's benchmarks: each suite measures one hot path through the real stack.

A suite is a synchronous function returning a JSON-ready report
(``{"suite", "machine", "date", "results": [...]}``) that ``kelpie bench`` prints or saves. Suites
live in their own modules (``kelpie.bench.storage``) and are imported from there, so running one
suite never imports another's dependencies.
"""
