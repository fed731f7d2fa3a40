"""The code a user would write without fastfp, one module per area: the benchmarks' baselines."""
