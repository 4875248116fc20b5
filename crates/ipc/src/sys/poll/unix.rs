//! Unix: `poll(2)`.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};

/// Waits until one of `fds` is readable (or hung up); returns the indices
/// of the ready ones, empty on timeout. `None` waits forever.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(fd, PollFlags::IN))
            .collect();
        let ts = deadline.map(|d| {
            let left = d.saturating_duration_since(std::time::Instant::now());
            Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            }
        });
        match rustix::event::poll(&mut pfds, ts.as_ref()) {
            Ok(0) => return Ok(Vec::new()),
            Ok(_) => {
                let ready: Vec<usize> = pfds
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.revents().is_empty())
                    .map(|(i, _)| i)
                    .collect();
                return Ok(ready);
            }
            Err(rustix::io::Errno::INTR) => {
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Ok(Vec::new());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
