"""walq's tools, used through the ``walq`` command: verify, dump and repair
(reading or mending a store's files from outside the API); the demo, the crash
bench, the benchmark, and their helpers (progress bars, tables, starting
worker processes)."""
