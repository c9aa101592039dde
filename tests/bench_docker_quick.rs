//! The Docker benchmark rows in quick mode, inside `cargo test`, so they keep working:
//! skipped with a printed reason when no daemon answers, unless `HERDSMAN_DOCKER=required`.

#[allow(dead_code)]
#[path = "../examples/bench/suite/mod.rs"]
mod suite;

#[test]
fn the_docker_benchmark_rows_run_in_quick_mode_and_measure_something() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let opts = suite::Options {
        only: vec!["docker".into()],
        ..suite::Options::quick()
    };
    let rows = runtime
        .block_on(runtime.spawn(async move { suite::run(&opts, |_| {}).await }))
        .expect("the benchmark task completes");
    let table = suite::markdown(&rows);
    eprintln!("{table}");
    if rows.is_empty() {
        // `connect` printed why; with HERDSMAN_DOCKER=required it would have panicked.
        return;
    }
    assert_eq!(rows.len(), 2, "crash and fleet rows:\n{table}");
    for row in &rows {
        assert!(
            row.ours.n > 0 && row.ours.p50.is_finite() && row.ours.p50 > 0.0,
            "{} measured nothing:\n{table}",
            row.what
        );
        assert!(
            row.floor.is_some_and(|f| f.p50 > 0.0),
            "{}: no floor",
            row.what
        );
    }
}
