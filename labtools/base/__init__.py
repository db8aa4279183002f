"""The base layer: where things live, the package's errors, prerequisites, progress bars, waits and
distribution summaries. It imports nothing else of labtools."""
