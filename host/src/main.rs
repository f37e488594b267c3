//! The `dax` binary: see `dax --help` and `cli` for the commands and exit codes.

use std::io::Write;

/// mimalloc: glibc malloc spent about a third of the CPU of 10,000 concurrent deployments in
/// free-list upkeep (BENCHMARKS.md, engine concurrency); the figures there are measured with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Logs go to stderr through the secret redactor, so no interpolated secret reaches them.
struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        // A log line that cannot be written (stderr closed: `dax ... 2>&1 | head`) is
        // dropped: reporting the failure would write to stderr again, and panic.
        let _ = std::io::stderr().write_all(dax::config::secrets::redact(&text).as_bytes());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

fn main() {
    // Code that still writes with `println!` must not crash on `dax ... | head` either:
    // a panic from writing to a closed stdout ends the process quietly (see `cli::output`).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if dax::cli::output::is_closed_stdout_panic(message) {
            std::process::exit(dax::cli::EXIT_STDOUT_CLOSED);
        }
        default_hook(info)
    }));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(|| RedactingStderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(dax::cli::main());
    // Don't wait for detached tasks (load generators, event hooks) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    // Write the journals from the host log and delete it (nothing is lost without this:
    // readers merge the log, and the next `dax` on the state directory adopts it).
    if let Err(e) = dax::state::checkpoint() {
        eprintln!("warning: {e:#}");
    }
    std::process::exit(code);
}
