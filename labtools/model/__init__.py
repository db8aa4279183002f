"""Layer 1, model: the testbed, the workload and the plan as data. Validation, no side effects."""
