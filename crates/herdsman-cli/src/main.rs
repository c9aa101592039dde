//! The `herdsman` command: validate, run, status.

fn main() {}
