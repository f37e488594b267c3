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

use futures::task::AtomicWaker;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
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

/// Run `main` (a client connection) and `beside` (its upstream connections) on one task until
/// either ends, polling each side only when something woke it, and both within one wakeup of
/// the task when one wakes the other.
///
/// So a request the handler has just queued is written upstream, and an answer just read from
/// upstream reaches the client, in the same poll rather than one trip later through the loop's
/// run queue. Polling only the woken side matters as much: hyper's server connection does work
/// on every poll (it reads the clock for its `Date` cache, tries its socket, polls the request
/// in flight and its timer), and a blind poll of both sides did that uselessly once or twice
/// per wakeup.
pub(crate) async fn run_beside<M, B>(main: M, beside: B)
where
    M: Future,
    B: Future<Output = ()>,
{
    /// Rounds of polling per wakeup before yielding to the loop's other connections (the sides
    /// could keep waking each other, e.g. when a task's cooperative budget runs out).
    const MAX_ROUNDS: usize = 16;
    let mut main = std::pin::pin!(main);
    let mut beside = std::pin::pin!(beside);
    let woken = Arc::new(Woken::default());
    let main_waker = Waker::from(Arc::new(SideWaker {
        woken: woken.clone(),
        side: MAIN,
    }));
    let beside_waker = Waker::from(Arc::new(SideWaker {
        woken: woken.clone(),
        side: BESIDE,
    }));
    std::future::poll_fn(|cx| {
        woken.task.register(cx.waker());
        for _ in 0..MAX_ROUNDS {
            woken.polling.store(true, Ordering::SeqCst);
            while woken.any() {
                if woken.take(MAIN)
                    && main
                        .as_mut()
                        .poll(&mut Context::from_waker(&main_waker))
                        .is_ready()
                {
                    return Poll::Ready(());
                }
                if woken.take(BESIDE)
                    && beside
                        .as_mut()
                        .poll(&mut Context::from_waker(&beside_waker))
                        .is_ready()
                {
                    return Poll::Ready(());
                }
            }
            // A side woken after the check above saw `polling` set and left the waking to us.
            woken.polling.store(false, Ordering::SeqCst);
            if !woken.any() {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

const MAIN: usize = 0;
const BESIDE: usize = 1;

/// Which sides of `run_beside` have been woken since they were last polled.
struct Woken {
    sides: [AtomicBool; 2],
    /// Set while the task polls the sides: a side woken meanwhile is polled in the same round,
    /// so its waker only marks it instead of scheduling the task again.
    polling: AtomicBool,
    task: AtomicWaker,
}

impl Default for Woken {
    fn default() -> Self {
        Woken {
            // Both sides start out to be polled once.
            sides: [AtomicBool::new(true), AtomicBool::new(true)],
            polling: AtomicBool::new(false),
            task: AtomicWaker::new(),
        }
    }
}

impl Woken {
    fn any(&self) -> bool {
        self.sides.iter().any(|s| s.load(Ordering::SeqCst))
    }

    fn take(&self, side: usize) -> bool {
        self.sides[side].swap(false, Ordering::SeqCst)
    }
}

/// The waker one side of `run_beside` is polled with.
struct SideWaker {
    woken: Arc<Woken>,
    side: usize,
}

impl Wake for SideWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.sides[self.side].store(true, Ordering::SeqCst);
        if !self.woken.polling.load(Ordering::SeqCst) {
            self.woken.task.wake();
        }
    }
}
