//! Measuring and reporting: the load tool's own CPU use, the broker's CPU
//! and memory from `/proc`, latency summaries, number formatting, and the
//! result objects printed as a table or as JSON.

use crate::console::stdoutln;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// CPU time used by this process so far (`getrusage(RUSAGE_SELF)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// User time in seconds.
    pub user: f64,
    /// System time in seconds.
    pub sys: f64,
}

impl CpuTime {
    /// Reads the process's CPU time now.
    pub fn now() -> CpuTime {
        Self::read(libc::RUSAGE_SELF)
    }

    /// Reads the calling thread's CPU time now.
    pub fn thread_now() -> CpuTime {
        Self::read(libc::RUSAGE_THREAD)
    }

    fn read(who: libc::c_int) -> CpuTime {
        // SAFETY: getrusage only writes into the zeroed struct we pass.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a properly sized rusage.
        let rc = unsafe { libc::getrusage(who, &mut usage) };
        if rc != 0 {
            return CpuTime::default();
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        CpuTime {
            user: secs(usage.ru_utime),
            sys: secs(usage.ru_stime),
        }
    }

    /// The CPU time used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user - earlier.user,
            sys: self.sys - earlier.sys,
        }
    }
}

/// Raises this process's open-file soft limit to its hard limit, so many
/// connections can be opened without a manual `ulimit -n`.
pub fn raise_fd_limit() {
    // SAFETY: plain syscalls on a stack struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A snapshot of another process (the broker) from `/proc/PID`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes (`VmRSS`).
    pub rss_bytes: u64,
}

impl ProcSample {
    /// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` if the process
    /// is not there or the files are unreadable.
    pub fn read(pid: u32) -> Option<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name in parentheses; utime and stime are
        // fields 14 and 15 of the whole line (1-based).
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(ProcSample {
            cpu_seconds: (utime + stime) / ticks,
            rss_bytes: rss_kib * 1024,
        })
    }
}

/// An empty latency histogram: nanoseconds from 1 ns to 10 minutes, 3
/// significant digits.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 600_000_000_000, 3) {
        Ok(h) => h,
        // The bounds above are constants that hdrhistogram accepts.
        Err(e) => unreachable!("histogram bounds: {e}"),
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// Summarises a histogram of nanosecond samples.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// The load tool's own CPU use over the measured interval.
#[derive(Debug, Clone, Serialize)]
pub struct LoadCpu {
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub sys_s: f64,
    /// Percent of one core over the interval (can exceed 100 with
    /// `--threads` above 1).
    pub percent_of_core: f64,
    /// CPU nanoseconds spent per received message (all work included).
    pub ns_per_delivery: Option<f64>,
}

impl LoadCpu {
    /// Builds the summary from CPU time used over `wall`, for `deliveries`.
    pub fn new(cpu: CpuTime, wall: Duration, deliveries: u64) -> LoadCpu {
        let total = cpu.user + cpu.sys;
        LoadCpu {
            user_s: cpu.user,
            sys_s: cpu.sys,
            percent_of_core: 100.0 * total / wall.as_secs_f64().max(1e-9),
            ns_per_delivery: (deliveries > 0).then(|| total * 1e9 / deliveries as f64),
        }
    }
}

/// The broker's CPU and memory over the run (with `--broker-pid`).
#[derive(Debug, Clone, Serialize)]
pub struct BrokerUsage {
    /// The broker's process id.
    pub pid: u32,
    /// Percent of one core the broker used over the interval.
    pub cpu_percent: f64,
    /// RSS at the start, bytes.
    pub rss_start_bytes: u64,
    /// RSS at the end, bytes.
    pub rss_end_bytes: u64,
}

impl BrokerUsage {
    /// Compares two samples taken `wall` apart.
    pub fn between(pid: u32, a: ProcSample, b: ProcSample, wall: Duration) -> BrokerUsage {
        BrokerUsage {
            pid,
            cpu_percent: 100.0 * (b.cpu_seconds - a.cpu_seconds) / wall.as_secs_f64().max(1e-9),
            rss_start_bytes: a.rss_bytes,
            rss_end_bytes: b.rss_bytes,
        }
    }
}

/// `1234567` → `1.23M`.
pub fn si(n: f64) -> String {
    let a = n.abs();
    if a >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else if a.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

/// Bytes in binary units.
pub fn bytes(n: f64) -> String {
    let a = n.abs();
    if a >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", n / (1u64 << 30) as f64)
    } else if a >= (1 << 20) as f64 {
        format!("{:.1} MiB", n / (1 << 20) as f64)
    } else if a >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

/// Microseconds, shown in the most readable unit.
pub fn micros(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Prints aligned `label  value` rows.
///
/// Like every report of `tickwire bench` (tables and `--json` lines), the
/// rows are written on a best-effort basis: a closed or full standard output
/// loses them but does not change the exit code, which reports the
/// measurement (docs/cli.md).
pub fn print_table(title: &str, rows: &[(&str, String)]) {
    let _ = stdoutln!("{title}");
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in rows {
        let _ = stdoutln!("  {label:<width$}  {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(12_300.0), "12.3k");
        assert_eq!(bytes(4096.0), "4.0 KiB");
        assert_eq!(micros(1500.0), "1.50 ms");
        assert_eq!(micros(15.2), "15 µs");
    }

    #[test]
    fn own_process_is_readable() {
        let sample = ProcSample::read(std::process::id()).unwrap();
        assert!(sample.rss_bytes > 0);
        let a = CpuTime::now();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(CpuTime::now().since(a).user >= 0.0);
    }

    #[test]
    fn latency_summary() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.saturating_record(v * 1000);
        }
        let l = Latency::from_histogram(&h);
        assert_eq!(l.count, 1000);
        assert!((l.p50_us - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.max_us - 1000.0).abs() < 1.0, "{l:?}");
    }
}
