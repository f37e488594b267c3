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
//!
//! `run_beside` is how a connection's task polls its two halves (the client connection and its
//! upstream connections): each only when woken, both within one wakeup when one wakes the other.

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
        // Each round polls each woken side once; a side woken meanwhile is polled next round.
        for _ in 0..MAX_ROUNDS {
            woken.polling.store(true, Ordering::SeqCst);
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
            // A side woken after `polling` was set left the waking to us: check after clearing.
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
    /// Set while the task polls the sides: a side woken meanwhile is polled in the next round
    /// of the same wakeup, so its waker only marks it instead of scheduling the task again.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A side that counts its polls, keeps its waker, and optionally wakes another side's
    /// kept waker (or its own) whenever it is polled.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        waker: Mutex<Option<Waker>>,
    }

    impl Probe {
        fn side(self: &Arc<Self>, then_wake: Option<Arc<Probe>>) -> impl Future<Output = ()> {
            let me = self.clone();
            std::future::poll_fn(move |cx| {
                me.polls.fetch_add(1, Ordering::SeqCst);
                *me.waker.lock().unwrap() = Some(cx.waker().clone());
                if let Some(w) = then_wake
                    .as_ref()
                    .and_then(|p| p.waker.lock().unwrap().take())
                {
                    w.wake();
                }
                Poll::<()>::Pending
            })
        }

        fn polls(&self) -> usize {
            self.polls.load(Ordering::SeqCst)
        }

        fn wake(&self) {
            self.waker
                .lock()
                .unwrap()
                .take()
                .expect("polled before")
                .wake();
        }
    }

    fn poll_once(f: std::pin::Pin<&mut impl Future<Output = ()>>) {
        let _ = f.poll(&mut Context::from_waker(Waker::noop()));
    }

    #[test]
    fn only_the_woken_side_is_polled() {
        let (main, beside) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
        let mut both = std::pin::pin!(run_beside(main.side(None), beside.side(None)));
        poll_once(both.as_mut());
        assert_eq!(
            (main.polls(), beside.polls()),
            (1, 1),
            "both sides start polled once"
        );
        beside.wake();
        poll_once(both.as_mut());
        assert_eq!((main.polls(), beside.polls()), (1, 2));
        main.wake();
        poll_once(both.as_mut());
        assert_eq!((main.polls(), beside.polls()), (2, 2));
        poll_once(both.as_mut());
        assert_eq!(
            (main.polls(), beside.polls()),
            (2, 2),
            "nothing woken, nothing polled"
        );
    }

    #[test]
    fn a_side_woken_by_the_other_is_polled_in_the_same_wakeup() {
        let (main, beside) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
        // The upstream side, when polled, wakes the client side (an answer arrived).
        let mut both = std::pin::pin!(run_beside(main.side(None), beside.side(Some(main.clone()))));
        poll_once(both.as_mut());
        let before = main.polls();
        beside.wake();
        poll_once(both.as_mut());
        assert_eq!(
            main.polls(),
            before + 1,
            "the answer reached the client in the same poll"
        );
    }

    #[test]
    fn a_side_that_always_wakes_itself_does_not_hold_the_loop() {
        // A connection whose side wakes itself on every poll (as one whose cooperative budget
        // ran out does) must yield to the loop's other connections.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let busy = Arc::new(Probe::default());
                let spinning = busy.side(Some(busy.clone()));
                let local = tokio::task::LocalSet::new();
                local.spawn_local(run_beside(spinning, std::future::pending()));
                local
                    .run_until(async {
                        tokio::task::yield_now().await;
                        tokio::task::yield_now().await;
                    })
                    .await;
                done_tx.send(busy.polls()).unwrap();
            });
        });
        let polls = done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the loop's other task never ran: run_beside kept polling a side that always wakes itself");
        assert!(
            polls > 1,
            "the busy side was polled again after yielding ({polls} polls)"
        );
    }
}
