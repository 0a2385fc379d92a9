//! Benchmark workloads and baselines (grows with the benchmark issue).
#![forbid(unsafe_code)]
