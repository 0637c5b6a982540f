"""walq's tools: the demo, the crash bench, the benchmark, and their helpers
(progress bars, tables, starting worker processes).  Internal: the ``walq``
command is their interface."""
