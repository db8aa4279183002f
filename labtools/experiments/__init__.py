"""Layer 6, experiments: sweeps, the SRv6 matrix, programming benches and capture runs, all written
through one recorder (`experiments.recorder`)."""
