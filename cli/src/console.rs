//! Writing to standard output and standard error without ever failing the
//! program because of it.
//!
//! `println!` and `eprintln!` panic when the write fails: when the pipe
//! behind the stream is closed (a log collector that died, `tickwire serve
//! 2>&1 | head`: `EPIPE`, since Rust ignores `SIGPIPE`), when it leads to a
//! full disk (`ENOSPC`), or when the descriptor is closed (`EBADF`). In the
//! broker such a panic kills the task that logged, for example the one that
//! turns SIGTERM into a graceful shutdown; in the client commands it ends
//! the process with a backtrace instead of an exit code. So the binary uses
//! neither (clippy's `print_stdout` and `print_stderr` lints refuse them in
//! this crate) but these macros, and the tracing subscriber writes through
//! [`crate::log_writer`].
//!
//! Standard error carries diagnostics: a line that cannot be written is
//! dropped ([`stderrln!`], [`stderr!`]). Standard output carries what a
//! command produces: [`stdoutln!`] returns the error, and each caller
//! decides what a lost line means (see docs/cli.md, "Exit codes").

use std::fmt;
use std::io::{self, Write};

/// Writes `args` to standard error; a failed write is ignored.
pub fn write_stderr(args: fmt::Arguments<'_>) {
    // Standard error is unbuffered: one write_fmt is the whole attempt.
    let _ = io::stderr().lock().write_fmt(args);
}

/// Writes `args` to standard output and flushes it, returning what failed.
pub fn write_stdout(args: fmt::Arguments<'_>) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_fmt(args)?;
    stdout.flush()
}

/// Like `eprintln!`, but a failed write is ignored instead of panicking.
macro_rules! stderrln {
    ($($arg:tt)*) => {
        $crate::console::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Like `eprint!`, but a failed write is ignored instead of panicking.
macro_rules! stderr {
    ($($arg:tt)*) => {
        $crate::console::write_stderr(format_args!($($arg)*))
    };
}

/// Like `println!` followed by a flush, but returns the `io::Result` of the
/// write instead of panicking.
macro_rules! stdoutln {
    ($($arg:tt)*) => {
        $crate::console::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {stderr, stderrln, stdoutln};
