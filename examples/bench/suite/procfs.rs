//! Read from /proc: what this process costs (resident memory, CPU time), and other
//! processes (the peer rows' supervisors and their children).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// A `kB` field of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, field)
}

/// A `kB` field of a status file's text, in bytes.
fn kib_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resident set size now (VmRSS), in bytes; 0 where /proc is unavailable.
pub(crate) fn rss_bytes() -> u64 {
    status_bytes("VmRSS:").unwrap_or(0)
}

/// Of the resident set now, the anonymous part (RssAnon: heap, stacks) and the
/// file-backed part (RssFile: the executable's code and data paged in, libraries), in
/// bytes, from one read of the status file; 0s where /proc is unavailable.
pub(crate) fn rss_split() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (
        kib_field(&status, "RssAnon:").unwrap_or(0),
        kib_field(&status, "RssFile:").unwrap_or(0),
    )
}

/// Peak resident set size (VmHWM), in bytes; 0 where /proc is unavailable.
pub(crate) fn peak_rss_bytes() -> u64 {
    status_bytes("VmHWM:").unwrap_or(0)
}

/// The numeric fields of /proc/self/stat that follow the command name, by their index
/// after its ')' (the line's field n is index n - 3); an empty list where /proc is
/// unavailable, which reads as zeros.
fn stat_fields() -> Vec<u64> {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Vec::new();
    };
    // The command name may contain spaces; the fields that follow start after its ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Vec::new();
    };
    rest.split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .collect()
}

/// CPU time (user + system) used by this process so far, from /proc/self/stat.
pub(crate) fn cpu_time() -> Duration {
    let fields = stat_fields();
    // utime and stime are fields 14 and 15 of the line.
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Minor page faults of this process so far (field 10 of /proc/self/stat): each is a page
/// of memory touched for the first time (or again, after it was given back).
pub(crate) fn minor_faults() -> u64 {
    stat_fields().get(7).copied().unwrap_or(0)
}

/// Hardware of this machine, for the record: cores, CPU model, memory.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} cores, {model}, {mem_gib:.1} GiB")
}

/// One process as /proc shows it.
#[derive(Debug, Clone)]
pub(crate) struct Proc {
    pub(crate) pid: u32,
    pub(crate) ppid: u32,
    pub(crate) comm: String,
    pub(crate) zombie: bool,
    /// The executable, or argv[0] where the link cannot be read.
    pub(crate) exe: Option<PathBuf>,
    pub(crate) argv0: String,
}

pub(crate) fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let mut fields = rest.split_whitespace();
            let zombie = fields.next()? == "Z";
            let ppid = fields.next()?.parse().ok()?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline
                .split(|b| *b == 0)
                .next()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default();
            Some(Proc {
                pid,
                ppid,
                comm,
                zombie,
                exe,
                argv0,
            })
        })
        .collect()
}

/// Live (not zombie) descendants of `root`, not including it.
pub(crate) fn descendants(all: &[Proc], root: u32) -> Vec<Proc> {
    let mut found: BTreeSet<u32> = BTreeSet::from([root]);
    let mut out = Vec::new();
    loop {
        let before = found.len();
        for p in all {
            if found.contains(&p.ppid) && found.insert(p.pid) && !p.zombie {
                out.push(p.clone());
            }
        }
        if found.len() == before {
            return out;
        }
    }
}

pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// RSS and PSS of one process, bytes, from /proc/PID/smaps_rollup.
pub(crate) fn rss_pss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("Rss:"), field("Pss:"))
}
