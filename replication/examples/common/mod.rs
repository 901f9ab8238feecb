//! What the examples share: measuring the CPU time they use.

/// Nanoseconds this process has run on a CPU (Linux's
/// `/proc/self/schedstat`), so that a rate per CPU second shows through a
/// machine shared with other work; None elsewhere.
pub fn cpu_ns() -> Option<u64> {
    let schedstat = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    schedstat.split_whitespace().next()?.parse().ok()
}

/// " (N per CPU second)" for `count` things done since `cpu_started`, or
/// nothing where the CPU time is unknown.
pub fn per_cpu_second(count: u64, cpu_started: Option<u64>) -> String {
    match (cpu_started, cpu_ns()) {
        (Some(start), Some(end)) if end > start => {
            let cpu_seconds = (end - start) as f64 / 1e9;
            format!(" ({:.0} per CPU second)", count as f64 / cpu_seconds)
        }
        _ => String::new(),
    }
}
