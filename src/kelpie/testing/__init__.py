"""Support for Kelpie's tests and benchmarks: throwaway servers and similar scaffolding.

Nothing in a production layer imports this package; only tests, fixtures and ``kelpie bench`` do.
"""
