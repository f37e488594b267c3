//! Writing to stdout and stderr like any CLI: a reader that goes away (`dax history | head -1`)
//! ends the output quietly instead of a panic. `println!` panics on a closed pipe (Rust
//! ignores SIGPIPE), so every line the CLI prints goes through [`outln!`] / [`errln!`].
//!
//! Once stdout is closed nothing more is written to it, the command still does its work (a
//! deployment still runs to its end and is journaled), and `dax` exits with
//! [`super::EXIT_STDOUT_CLOSED`] (141, as a program stopped by SIGPIPE).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether a write to stdout found it closed.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// Write one line to stdout; after a failed write (a closed pipe) write nothing more.
pub fn out_line(args: std::fmt::Arguments<'_>) {
    write_line(&mut std::io::stdout().lock(), &STDOUT_CLOSED, args);
}

/// Write one line to stderr; after a failed write write nothing more.
pub fn err_line(args: std::fmt::Arguments<'_>) {
    write_line(&mut std::io::stderr().lock(), &STDERR_CLOSED, args);
}

fn write_line(w: &mut impl Write, closed: &AtomicBool, args: std::fmt::Arguments<'_>) {
    if closed.load(Ordering::Relaxed) {
        return;
    }
    let written = w
        .write_fmt(args)
        .and_then(|_| w.write_all(b"\n"))
        .and_then(|_| w.flush());
    if written.is_err() {
        // A broken pipe is the reader saying "enough"; any other failure leaves nowhere
        // to report it either.
        closed.store(true, Ordering::Relaxed);
    }
}

/// `println!` that stops quietly when stdout is closed.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::output::out_line(format_args!($($arg)*)) };
}

/// `eprintln!` that stops quietly when stderr is closed.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::output::err_line(format_args!($($arg)*)) };
}

pub(crate) use {errln, outln};

/// The message of the panic `println!` / `eprintln!` raise on a closed pipe, for the
/// binary's panic hook: code that still uses them must not crash on `| head` either.
pub fn is_closed_stdout_panic(message: &str) -> bool {
    (message.contains("failed printing to stdout") || message.contains("failed printing to stderr"))
        && message.contains("Broken pipe")
}
