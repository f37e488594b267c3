//! Per-version request statistics recorded by the local proxy, shared in-process.
//!
//! One registry per host process (`registry()`), keyed by (app, slot, version). Each series
//! keeps monotonic totals (for the Prometheus exposition) and one bucket per wall-clock second
//! for the last [`RETAIN_SECS`] seconds, so `local-metrics` can answer window queries
//! ("success rate of the candidate over the last 30 s") without a Prometheus server.
//!
//! The exposition is formatted by hand rather than through `prometheus-client`: the numbers
//! already live in this time-bucketed registry (which the window queries need anyway), and the
//! text format for two metric families is a few lines; a client library would mean keeping a
//! second copy of every counter or writing a custom collector, which is more code, not less.

use crate::contract::Slot;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Latency histogram upper bounds in seconds (the agreed buckets; `+Inf` is implicit).
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How much per-second history each series keeps (15 minutes).
pub const RETAIN_SECS: u64 = 900;

/// Status classes in label order; index = status / 100 - 1.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub app: String,
    pub slot: SlotLabel,
    pub version: String,
}

/// `Slot` with an ordering, so series sort stably in the exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotLabel {
    Stable,
    Candidate,
}

impl From<Slot> for SlotLabel {
    fn from(s: Slot) -> Self {
        match s {
            Slot::Stable => SlotLabel::Stable,
            Slot::Candidate => SlotLabel::Candidate,
        }
    }
}

impl SlotLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotLabel::Stable => "stable",
            SlotLabel::Candidate => "candidate",
        }
    }
}

/// Request counts, a latency histogram and mirrored-request count over some span of time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Responses per status class, see [`STATUS_CLASSES`].
    pub by_class: [u64; 5],
    /// Non-cumulative histogram counts per bucket of [`BUCKETS`], plus the `+Inf` bucket.
    pub buckets: [u64; 12],
    pub sum_seconds: f64,
    /// Requests copied to this series by mirroring (responses discarded, not in `by_class`).
    pub mirrored: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.by_class.iter().sum()
    }

    pub fn errors_5xx(&self) -> u64 {
        self.by_class[4]
    }

    fn record(&mut self, status: u16, latency: Duration) {
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.by_class[class] += 1;
        let secs = latency.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket] += 1;
        self.sum_seconds += secs;
    }

    fn add(&mut self, other: &Counts) {
        for (a, b) in self.by_class.iter_mut().zip(other.by_class) {
            *a += b;
        }
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_seconds += other.sum_seconds;
        self.mirrored += other.mirrored;
    }

    /// Percent of responses that were not 5xx; `None` without responses.
    pub fn success_rate(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| 100.0 * (total - self.errors_5xx()) as f64 / total as f64)
    }

    /// The `q` quantile of latency in seconds, interpolated within buckets exactly like
    /// PromQL's `histogram_quantile`, so `local-metrics` and the Prometheus plugin agree.
    pub fn quantile_seconds(&self, q: f64) -> Option<f64> {
        let count: u64 = self.buckets.iter().sum();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut cumulative = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            let before = cumulative;
            cumulative += n;
            if (cumulative as f64) >= rank && n > 0 {
                if i == BUCKETS.len() {
                    // In the +Inf bucket: like Prometheus, answer the highest finite bound.
                    return Some(BUCKETS[BUCKETS.len() - 1]);
                }
                let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                let upper = BUCKETS[i];
                return Some(lower + (upper - lower) * (rank - before as f64) / n as f64);
            }
        }
        Some(BUCKETS[BUCKETS.len() - 1])
    }
}

/// One series' counts over one span: monotonic totals plus one bucket per second.
#[derive(Default)]
struct Recorded {
    total: Counts,
    /// (unix second, counts during that second), oldest first.
    recent: VecDeque<(u64, Counts)>,
}

impl Recorded {
    fn current(&mut self, now_ms: u64) -> &mut Counts {
        let sec = now_ms / 1000;
        if self.recent.back().map(|(s, _)| *s) != Some(sec) {
            self.recent.push_back((sec, Counts::default()));
            while let Some((s, _)) = self.recent.front() {
                if s + RETAIN_SECS < sec {
                    self.recent.pop_front();
                } else {
                    break;
                }
            }
        }
        &mut self.recent.back_mut().expect("just pushed").1
    }
}

/// One shard on a cache line of its own, so two cores recording never share a line.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Recorded>);

/// The statistics of one (app, slot, version). Recording is sharded per thread: the proxy
/// records on every request from every tokio worker, and one lock (or one counter) shared by
/// all of them made the cores fight over its cache line. A worker locks only its own shard
/// (uncontended); readers sum the shards.
pub struct Series {
    shards: Box<[Shard]>,
}

/// How many shards a series has: one per core (threads beyond that share).
fn shard_count() -> usize {
    static COUNT: LazyLock<usize> = LazyLock::new(|| {
        std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .clamp(1, 64)
    });
    *COUNT
}

/// This thread's shard index (threads are numbered in the order they first record).
fn my_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    MINE.with(|i| *i) % shard_count()
}

impl Series {
    fn new() -> Self {
        Series {
            shards: (0..shard_count()).map(|_| Shard::default()).collect(),
        }
    }

    /// Record one served request at `at_ms` (unix milliseconds).
    pub fn record_at(&self, status: u16, latency: Duration, at_ms: u64) {
        let mut r = self.shards[my_shard()]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        r.total.record(status, latency);
        r.current(at_ms).record(status, latency);
    }

    /// Record one served request now.
    pub fn record(&self, status: u16, latency: Duration) {
        self.record_at(status, latency, now_ms());
    }

    /// Record one request copied to this series by mirroring.
    pub fn record_mirrored(&self) {
        let now = now_ms();
        let mut r = self.shards[my_shard()]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        r.total.mirrored += 1;
        r.current(now).mirrored += 1;
    }

    fn each_shard(&self, mut f: impl FnMut(&Recorded)) {
        for shard in self.shards.iter() {
            f(&shard.0.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    fn total(&self) -> Counts {
        let mut out = Counts::default();
        self.each_shard(|r| out.add(&r.total));
        out
    }
}

/// The in-process statistics registry. Series are never removed, so each is allocated once
/// for the life of the process and handed out as `&'static` (the proxy keeps one per pool and
/// records without a lookup or a reference count).
#[derive(Default)]
pub struct Registry {
    series: Mutex<BTreeMap<SeriesKey, &'static Series>>,
}

/// The registry every local proxy in this process records into.
pub fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);
    &REGISTRY
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Which series a window query sums over.
#[derive(Debug, Clone)]
pub struct Selector<'a> {
    pub app: &'a str,
    pub slot: SlotLabel,
    /// Only this version, or every version that served in this slot.
    pub version: Option<&'a str>,
}

impl Registry {
    /// The series of `key`, created on first use.
    pub fn series(&self, key: &SeriesKey) -> &'static Series {
        let mut map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(key) {
            return s;
        }
        let s: &'static Series = Box::leak(Box::new(Series::new()));
        map.insert(key.clone(), s);
        s
    }

    /// Record one served request.
    pub fn record(&self, key: &SeriesKey, status: u16, latency: Duration) {
        self.series(key).record(status, latency);
    }

    pub fn record_at(&self, key: &SeriesKey, status: u16, latency: Duration, at_ms: u64) {
        self.series(key).record_at(status, latency, at_ms);
    }

    /// Record one request copied to `key` by mirroring.
    pub fn record_mirrored(&self, key: &SeriesKey) {
        self.series(key).record_mirrored();
    }

    /// Everything recorded for the selected series in `(from_ms, to_ms]`, at one-second
    /// resolution: the seconds after `from_ms`'s second up to and including `to_ms`'s (so a
    /// 30 s window is 30 buckets, the last one the current, partial second, and adjacent
    /// windows never count a second twice).
    pub fn window(&self, sel: &Selector<'_>, from_ms: u64, to_ms: u64) -> Counts {
        let from_sec = from_ms / 1000;
        let to_sec = to_ms / 1000;
        let map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Counts::default();
        for (key, series) in map.iter() {
            if key.app != sel.app
                || key.slot != sel.slot
                || sel.version.is_some_and(|v| v != key.version)
            {
                continue;
            }
            series.each_shard(|r| {
                for (sec, counts) in r.recent.iter().rev() {
                    if *sec <= from_sec {
                        break;
                    }
                    if *sec <= to_sec {
                        out.add(counts);
                    }
                }
            });
        }
        out
    }

    /// Monotonic totals of every series (for tests and reports).
    pub fn totals(&self, key: &SeriesKey) -> Counts {
        let map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).map(|s| s.total()).unwrap_or_default()
    }

    /// Prometheus text exposition (format 0.0.4) of every series.
    pub fn render_prometheus(&self) -> String {
        let map: Vec<(SeriesKey, Counts)> = {
            let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
            series
                .iter()
                .map(|(k, s)| (k.clone(), s.total()))
                // A series exists from the moment a route table names its version; it shows
                // once the version has served (or been mirrored) a request.
                .filter(|(_, c)| c.total() > 0 || c.mirrored > 0)
                .collect()
        };
        let mut out = String::new();
        out.push_str("# HELP dax_proxy_requests_total Requests answered by the dax local proxy, per version and status class.\n");
        out.push_str("# TYPE dax_proxy_requests_total counter\n");
        for (key, s) in map.iter() {
            for (i, class) in STATUS_CLASSES.iter().enumerate() {
                let n = s.by_class[i];
                // 1xx is almost never seen; the agreed classes are 2xx..5xx, always present.
                if i == 0 && n == 0 {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "dax_proxy_requests_total{{{},status_class=\"{class}\"}} {n}",
                    labels(key)
                );
            }
        }
        out.push_str("# HELP dax_proxy_request_duration_seconds Time from request to upstream response headers, per version.\n");
        out.push_str("# TYPE dax_proxy_request_duration_seconds histogram\n");
        for (key, s) in map.iter() {
            let l = labels(key);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(
                    out,
                    "dax_proxy_request_duration_seconds_bucket{{{l},le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += s.buckets[BUCKETS.len()];
            let _ = writeln!(
                out,
                "dax_proxy_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "dax_proxy_request_duration_seconds_sum{{{l}}} {}",
                s.sum_seconds
            );
            let _ = writeln!(
                out,
                "dax_proxy_request_duration_seconds_count{{{l}}} {cumulative}"
            );
        }
        out.push_str("# HELP dax_proxy_mirrored_requests_total Requests copied to a version by traffic mirroring (responses discarded).\n");
        out.push_str("# TYPE dax_proxy_mirrored_requests_total counter\n");
        for (key, s) in map.iter() {
            if s.mirrored > 0 {
                let _ = writeln!(
                    out,
                    "dax_proxy_mirrored_requests_total{{{}}} {}",
                    labels(key),
                    s.mirrored
                );
            }
        }
        out
    }
}

fn labels(key: &SeriesKey) -> String {
    format!(
        "app=\"{}\",slot=\"{}\",version=\"{}\"",
        escape(&key.app),
        key.slot.as_str(),
        escape(&key.version)
    )
}

/// Label value escaping of the text format: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(app: &str, slot: SlotLabel, v: &str) -> SeriesKey {
        SeriesKey {
            app: app.into(),
            slot,
            version: v.into(),
        }
    }

    #[test]
    fn window_only_counts_recent_seconds() {
        let r = Registry::default();
        let k = key("a", SlotLabel::Candidate, "v2");
        let t0 = 1_000_000_000u64;
        r.record_at(&k, 200, Duration::from_millis(3), t0);
        r.record_at(&k, 500, Duration::from_millis(3), t0 + 10_000);
        r.record_at(&k, 200, Duration::from_millis(3), t0 + 10_500);
        let sel = Selector {
            app: "a",
            slot: SlotLabel::Candidate,
            version: None,
        };
        let w = r.window(&sel, t0 + 5_000, t0 + 10_600);
        assert_eq!(w.total(), 2);
        assert_eq!(w.success_rate(), Some(50.0));
        let all = r.window(&sel, t0 - 1, t0 + 10_600);
        assert_eq!(all.total(), 3);
        let other = Selector {
            app: "a",
            slot: SlotLabel::Stable,
            version: None,
        };
        assert_eq!(r.window(&other, t0, t0 + 10_600).success_rate(), None);
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let mut c = Counts::default();
        for _ in 0..100 {
            c.record(200, Duration::from_millis(30)); // bucket (0.025, 0.05]
        }
        let p99 = c.quantile_seconds(0.99).unwrap();
        assert!((p99 - (0.025 + 0.025 * 0.99)).abs() < 1e-9, "{p99}");
        let mut slow = Counts::default();
        slow.record(200, Duration::from_secs(30));
        assert_eq!(slow.quantile_seconds(0.99), Some(10.0));
        assert_eq!(Counts::default().quantile_seconds(0.99), None);
    }

    #[test]
    fn exposition_has_agreed_names_and_cumulative_buckets() {
        let r = Registry::default();
        let k = key("de\"mo", SlotLabel::Stable, "v1");
        r.record(&k, 200, Duration::from_millis(2));
        r.record(&k, 503, Duration::from_millis(200));
        let text = r.render_prometheus();
        assert!(text.contains(
            "dax_proxy_requests_total{app=\"de\\\"mo\",slot=\"stable\",version=\"v1\",status_class=\"5xx\"} 1"
        ), "{text}");
        assert!(text.contains("le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("le=\"0.25\"} 2\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("dax_proxy_request_duration_seconds_count{app=\"de\\\"mo\",slot=\"stable\",version=\"v1\"} 2"));
    }
}
