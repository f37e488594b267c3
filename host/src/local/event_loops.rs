//! The proxy's event loops: one single-threaded tokio runtime per core, each on a thread of
//! its own, and every accepted connection handed to one of them (round robin) for its whole
//! life, the way an nginx or Envoy worker owns its connections.
//!
//! On the process's multi-threaded runtime a connection's task moved between workers by work
//! stealing, so a request and its upstream answer were often handled on different cores, and
//! the proxy shared its threads with the engine's own work. Measured with `proxy_bench`
//! (BENCHMARKS.md, "One event loop per core"): ~9% more requests at saturation, a quarter less
//! CPU per request on one connection, and no run in the lower throughput mode that the shared
//! runtime fell into now and then.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::task::JoinSet;

/// The loops, started on first use; empty if no thread could be started (connections then
/// run on the runtime that accepted them).
fn loops() -> &'static [Handle] {
    static LOOPS: OnceLock<Vec<Handle>> = OnceLock::new();
    LOOPS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..cores)
            .map_while(|i| {
                start_loop(i)
                    .inspect_err(|e| tracing::warn!("could not start proxy event loop {i}: {e}"))
                    .ok()
            })
            .collect()
    })
}

fn start_loop(index: usize) -> std::io::Result<Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("dax-proxy-{index}"))
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// Serve the accepted `stream` with `serve` on the next event loop, as a task of `set`
/// (aborting or dropping the set ends it, wherever it runs).
pub(crate) fn spawn_connection<F, Fut>(set: &mut JoinSet<()>, stream: TcpStream, serve: F)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let loops = loops();
    if loops.is_empty() {
        set.spawn(serve(stream));
        return;
    }
    // The stream is registered with the runtime that accepted it: re-register it with the
    // loop's own I/O driver, there.
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let at = NEXT.fetch_add(1, Ordering::Relaxed) % loops.len();
    set.spawn_on(
        async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                serve(stream).await
            }
        },
        &loops[at],
    );
}
