//! The benchmark suite: every row of DESIGN.md's performance table, each beside a floor
//! measured in the same run, printed as a markdown table (p50 / p99, ratio to the floor,
//! met or missed).
//!
//! ```text
//! cargo run --release --example bench                 # everything, a few minutes
//! cargo run --release --example bench -- --quick      # small sizes, no verdicts
//! cargo run --release --example bench -- --only restart,burst --json
//! cargo run --release --example bench -- --only docker   # needs dockerd + the test image
//! cargo run --release --example bench -- --only peers    # runit, s6, supervisord, Docker
//! ```
//!
//! The memory, CPU and idle-process rows run in fresh child processes of this binary
//! (`--child`), so what earlier rows left in the allocator does not skew them.

mod suite;

use std::time::Duration;

use clap::Parser;

/// Measure herdsman against its performance targets and against raw ractor and tokio.
#[derive(Debug, Parser)]
struct Args {
    /// Small sizes and no verdicts: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Only these rows (comma separated): restart, process, idle, burst, memory, cpu,
    /// healthy, spec, cli, cluster; and docker (real containers) and peers (runit, s6,
    /// supervisord, Docker's restart policy), run only when named.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also print each row as a JSON line.
    #[arg(long)]
    json: bool,
    /// Run every row in this process (no child processes).
    #[arg(long)]
    in_process: bool,
    /// Internal: run one measurement (`ours`, `floor`, `idle`) and print it as JSON.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal: the child measurement's size.
    #[arg(long, hide = true, default_value_t = 0)]
    n: u32,
    /// Internal: the child measurement's CPU window, in milliseconds (0: none).
    #[arg(long, hide = true, default_value_t = 0)]
    window_ms: u64,
}

fn main() {
    let args = Args::parse();
    // As the `herdsman` command does: every thread on a short scheduler slice (the
    // floors run on these threads too).
    herdsman::runtime::request_short_time_slice();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(|| {
            herdsman::runtime::request_short_time_slice();
        })
        .build()
        .expect("a tokio runtime can be built");
    if let Some(kind) = &args.child {
        let (kind, n) = (kind.clone(), args.n);
        let window = Duration::from_millis(args.window_ms);
        let result = runtime
            .block_on(runtime.spawn(async move { suite::child(&kind, n, window).await }))
            .expect("the measurement task completes");
        println!("{result}");
        return;
    }
    let mut opts = if args.quick {
        suite::Options::quick()
    } else {
        suite::Options::default()
    };
    opts.only = args.only.clone();
    if !args.in_process {
        opts.isolate_with = Some(std::env::current_exe().expect("the bench knows its own path"));
    }
    eprintln!("machine: {}", suite::procfs::machine());
    let json = args.json;
    // Driven from a task on a worker thread, not from `block_on`'s thread: a wake from
    // outside the pool goes through the injection queue and a futex, which would be
    // measured as if it were herdsman's (or the floor's) latency.
    let rows = runtime
        .block_on(runtime.spawn(async move {
            suite::run(&opts, |row| {
                eprintln!("{}: {}  (floor {})", row.what, row.ours, row.floor_what);
                if json {
                    println!("{}", row.to_json());
                }
            })
            .await
        }))
        .expect("the benchmark task completes");
    println!("\nmachine: {}\n", suite::procfs::machine());
    print!("{}", suite::markdown(&rows));
    println!();
    for row in &rows {
        println!("- {}: {}", row.what, row.notes);
    }
    println!(
        "\npeak RSS of the bench process: {:.0} MiB",
        suite::procfs::peak_rss_bytes() as f64 / 1024.0 / 1024.0
    );
}
