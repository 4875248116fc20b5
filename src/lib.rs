//! The root package: owns the seed examples (`examples/`) and the integration tests (`tests/`). Not published.
