//! Operator control without per-deployment polling.
//!
//! `dax promote ID` / `dax abort ID` (another process) append to the deployment's
//! `control.jsonl` and then ring the state directory's bell, `STATE_DIR/control-bell.jsonl`,
//! with the deployment's ID (see [`crate::state::StateDir::send_control`]). One watcher task
//! per engine looks at the bell's length every `control_poll` and wakes only the deployments
//! named in new lines; they then read their own `control.jsonl`. With 10,000 deployments
//! that is one `stat` per poll instead of 10,000 file opens, and a deployment that nobody
//! controls never touches its control file after it starts.

use crate::state::StateDir;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// The engine's side of the bell: who is listening, and the watcher that wakes them.
pub struct ControlBell {
    path: std::path::PathBuf,
    poll: Duration,
    listeners: Mutex<HashMap<String, Arc<Listener>>>,
    watcher_started: AtomicBool,
}

/// One running deployment's doorbell.
pub struct Listener {
    rang: AtomicBool,
    wake: Notify,
}

impl Listener {
    /// Whether the bell rang since the last call (the control file may have news).
    pub fn take_ring(&self) -> bool {
        self.rang.swap(false, Ordering::AcqRel)
    }

    /// Until the bell rings for this deployment (returns at once if it already has).
    pub async fn rung(&self) {
        if self.rang.load(Ordering::Acquire) {
            return;
        }
        self.wake.notified().await;
    }
}

/// Unregisters a deployment when its run ends.
pub struct Registration {
    bell: Arc<ControlBell>,
    id: String,
    pub listener: Arc<Listener>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut listeners = self
            .bell
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if listeners
            .get(&self.id)
            .is_some_and(|l| Arc::ptr_eq(l, &self.listener))
        {
            listeners.remove(&self.id);
        }
    }
}

impl ControlBell {
    pub fn new(state: &StateDir, poll: Duration) -> Arc<Self> {
        Arc::new(ControlBell {
            path: state.control_bell_path(),
            poll,
            listeners: Mutex::new(HashMap::new()),
            watcher_started: AtomicBool::new(false),
        })
    }

    /// Listen for deployment `id`. The first registration starts the watcher, which only
    /// reports bell lines written after it started: the caller reads its control file once
    /// after registering to catch anything older.
    pub fn register(self: &Arc<Self>, id: &str) -> Registration {
        let listener = Arc::new(Listener {
            rang: AtomicBool::new(false),
            wake: Notify::new(),
        });
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), listener.clone());
        if !self.watcher_started.swap(true, Ordering::AcqRel) {
            let start = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
            tokio::spawn(watch(Arc::downgrade(self), start));
        }
        Registration {
            bell: self.clone(),
            id: id.to_string(),
            listener,
        }
    }

    fn ring(&self, id: &str) {
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = listeners.get(id) {
            l.rang.store(true, Ordering::Release);
            l.wake.notify_one();
        }
    }
}

/// Until the engine is dropped: every `poll`, read new complete lines of the bell file.
async fn watch(bell: Weak<ControlBell>, mut offset: u64) {
    loop {
        let Some(b) = bell.upgrade() else { return };
        let poll = b.poll;
        let len = std::fs::metadata(&b.path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0; // the bell was truncated or replaced
        }
        if len > offset {
            if let Ok(bytes) = read_from(&b.path, offset, len) {
                // Only complete lines: a ring being written is read next time.
                let complete = bytes.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
                for line in bytes[..complete].split(|&c| c == b'\n') {
                    if let Ok(ring) = serde_json::from_slice::<crate::state::BellRing>(line) {
                        b.ring(&ring.id);
                    }
                }
                offset += complete as u64;
            }
        }
        drop(b);
        tokio::time::sleep(poll).await;
    }
}

fn read_from(path: &std::path::Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::with_capacity((len - offset) as usize);
    f.take(len - offset).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Garbage, rings for unknown deployments and half-written lines in the bell wake no one
    /// by mistake; a ring wakes exactly the deployment it names, once its line is complete.
    #[tokio::test]
    async fn the_bell_wakes_only_the_named_deployment() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::write(state.control_bell_path(), "{\"id\":\"a\"}\n").unwrap(); // before start
        let bell = ControlBell::new(&state, Duration::from_millis(20));
        let a = bell.register("a");
        let b = bell.register("b");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(state.control_bell_path())
            .unwrap();
        f.write_all(
            b"not json\n{\"id\":\"nobody\"}\n{\"id\":\"../a\"}\n{\"id\":\"b\"}\n{\"id\":\"a",
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(5), b.listener.rung())
            .await
            .expect("b is woken");
        assert!(b.listener.take_ring());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !a.listener.take_ring(),
            "old, foreign and torn lines wake no one"
        );
        f.write_all(b"\"}\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), a.listener.rung())
            .await
            .expect("a is woken once its line is complete");
        drop(b);
        assert_eq!(bell.listeners.lock().unwrap().len(), 1, "b unregistered");
    }
}
