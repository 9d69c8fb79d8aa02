//! What `/proc` says about a running process: the memory and descriptor figures the limit,
//! fault and soak suites watch.

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/PID/status`); `None` once the process
/// is gone or on a system without procfs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix("VmRSS:")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

/// Open file descriptors of `pid`; 0 once the process is gone.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_resident_memory_and_open_descriptors() {
        let rss = rss_kib(std::process::id()).expect("VmRSS of this test process");
        assert!(rss > 0, "VmRSS {rss} KiB");
        assert!(
            open_fds(std::process::id()) >= 3,
            "stdin, stdout and stderr are open"
        );
    }

    #[test]
    fn a_process_that_does_not_exist_has_no_figures() {
        // Above the kernel's pid_max ceiling (2^22), so never a live pid.
        assert_eq!(rss_kib(u32::MAX), None);
        assert_eq!(open_fds(u32::MAX), 0);
    }
}
