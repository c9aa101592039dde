//! The benchmark suite in quick mode, inside `cargo test`: every row runs at small sizes
//! with no time asserted, so the suite keeps compiling and working as the code changes.

#[allow(dead_code)]
#[path = "../examples/bench/suite/mod.rs"]
mod suite;

#[test]
fn every_benchmark_row_runs_in_quick_mode_and_measures_something() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    // From a task on a worker thread, as the bench binary does.
    let rows = runtime
        .block_on(runtime.spawn(async { suite::run(&suite::Options::quick(), |_| {}).await }))
        .expect("the benchmark task completes");
    let table = suite::markdown(&rows);
    eprintln!("{table}");
    assert_eq!(rows.len(), 9, "one row per measurement:\n{table}");
    for row in &rows {
        assert!(
            row.ours.n > 0 && row.ours.p50.is_finite() && row.ours.p50 > 0.0,
            "{} measured nothing:\n{table}",
            row.what
        );
        if let Some(floor) = row.floor {
            assert!(floor.p50.is_finite(), "{}: no floor:\n{table}", row.what);
        }
        assert_eq!(row.met, None, "quick mode judges nothing");
    }
}
