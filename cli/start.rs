//! How authctl starts: from C's `main`, without the standard library's runtime set-up.
//!
//! A Rust `fn main` is called by std's start-up, which on Linux also installs the handler
//! that names a stack overflow: it reads `/proc/self/maps` (through
//! `pthread_getattr_np`), maps an alternate signal stack and sets two signal handlers —
//! about a tenth of a millisecond of every command on a small VM, and authctl is started
//! once per command by operators and scripts. So authctl is `#![no_main]` and does
//! itself the parts of that start-up it relies on ([`prepare`]):
//!
//! - file descriptors 0, 1 and 2 are open, on `/dev/null` where the caller closed one, so
//!   that a file authctl opens (the database, its key file) can never become its standard
//!   output or error;
//! - SIGPIPE is ignored, so that writing to a closed pipe is an error the output code
//!   answers (`authctl … | head` ends quietly with 0);
//! - a panic ends the process with exit code 101 and its message on stderr, as before.
//!
//! What is given up: a stack overflow still stops the process at the guard page
//! (SIGSEGV), it is only not reported by name. std reads the arguments on its own (glibc
//! hands them to its initialiser), and `std::process::exit`, which every path of the
//! program ends with, flushes standard output.
//!
//! Tests: `tests/it/cli.rs` runs the binary with its standard output closed
//! (`a_closed_standard_output_never_becomes_a_file`) and on a closed pipe
//! (`a_closed_pipe_ends_quietly`).

/// Open whichever of fds 0–2 is closed on `/dev/null`, and ignore SIGPIPE.
#[cfg_attr(test, allow(dead_code))]
pub fn prepare() {
    // SAFETY: poll, fcntl, open and signal are called with valid arguments on a single
    // thread before anything else runs; no Rust object owns fds 0–2 yet.
    unsafe {
        let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        });
        loop {
            if libc::poll(fds.as_mut_ptr(), 3, 0) != -1 {
                break;
            }
            let errno = std::io::Error::last_os_error().raw_os_error();
            if errno == Some(libc::EINTR) {
                continue;
            }
            // poll refused (as std does then: ask each descriptor).
            for p in &mut fds {
                let closed = libc::fcntl(p.fd, libc::F_GETFD) == -1
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
                p.revents = if closed { libc::POLLNVAL } else { 0 };
            }
            break;
        }
        for p in fds {
            // open() takes the lowest free descriptor: the closed one, in order.
            if p.revents & libc::POLLNVAL != 0
                && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) == -1
            {
                libc::abort();
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}
