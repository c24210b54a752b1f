//! CPU time and peak memory of a process, from Linux's /proc.

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User and system CPU seconds, all threads.
    pub cpu_seconds: f64,
    /// Peak resident memory (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

impl Usage {
    /// Another process's usage added: CPU seconds summed, the higher peak.
    pub fn add(&mut self, other: &Usage) {
        self.cpu_seconds += other.cpu_seconds;
        self.peak_rss_mib = self.peak_rss_mib.max(other.peak_rss_mib);
    }
}

/// Usage of process `pid` ("self" for this one); zeros where /proc does
/// not tell (the process is gone, not Linux).
pub fn of(pid: &str) -> Usage {
    let read = |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    Usage { cpu_seconds: cpu_seconds(&read("stat")), peak_rss_mib: peak_rss_mib(&read("status")) }
}

fn cpu_seconds(stat: &str) -> f64 {
    // Fields after the command name (which may hold spaces) in parentheses;
    // utime and stime are fields 14 and 15 of stat (11 and 12 after ')').
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

fn peak_rss_mib(status: &str) -> f64 {
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_are_read_from_proc() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(cpu_seconds(stat), 3.25);
        assert_eq!(peak_rss_mib("Name:\tx\nVmHWM:\t  204800 kB\n"), 200.0);
        assert_eq!(of("no-such-process"), Usage::default());
        assert!(of("self").peak_rss_mib > 0.0);
        let mut two = Usage { cpu_seconds: 1.5, peak_rss_mib: 300.0 };
        two.add(&Usage { cpu_seconds: 2.0, peak_rss_mib: 200.0 });
        assert_eq!(two, Usage { cpu_seconds: 3.5, peak_rss_mib: 300.0 });
    }
}
