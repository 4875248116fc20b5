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

/// The largest write [`room_now`] vouches for: far below the
/// quarter of the send buffer that `POLLOUT` leaves free at the least.
const ROOM_VOUCHED: usize = 16 << 10;

/// Whether `fd` is a Unix stream socket: the sockets [`room_now`]
/// vouches for (asked once per connection, not per write).
pub fn is_local_stream(fd: BorrowedFd<'_>) -> bool {
    rustix::net::getsockname(fd)
        .is_ok_and(|a| a.address_family() == rustix::net::AddressFamily::UNIX)
        && rustix::net::sockopt::socket_type(fd).is_ok_and(|t| t == rustix::net::SocketType::STREAM)
}

/// Whether `len` bytes go now without blocking, whatever its peer does,
/// into a socket [`is_local_stream`] said is a Unix stream socket. Its
/// writes are bounded by the sender's buffer alone, and `POLLOUT` on it
/// means at most a quarter of that buffer (over 200 KiB by default) is in
/// use; so a write of up to [`ROOM_VOUCHED`] bytes fits. Anything else
/// (a larger write, an error): false. One `poll`.
pub fn room_now(fd: BorrowedFd<'_>, len: usize) -> bool {
    if len > ROOM_VOUCHED {
        return false;
    }
    let mut pfd = [PollFd::new(&fd, PollFlags::OUT)];
    matches!(
        rustix::event::poll(
            &mut pfd,
            Some(&Timespec {
                tv_sec: 0,
                tv_nsec: 0
            })
        ),
        Ok(1)
    ) && pfd[0].revents().contains(PollFlags::OUT)
}

/// Whether [`poll_readable`] waits on streams without polling. `poll(2)` sleeps in the kernel until a stream is ready.
pub const WAITS_ON_STREAMS: bool = true;
