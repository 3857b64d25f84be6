//! The writer's two queues. Ingest's inserts (the commands submitted with
//! [`super::Writer::submit_atomic`]) wait in one, every other write (claims, a run's
//! records, releases, the operator's changes) and the shutdown in the other. Each batch
//! takes the other writes first, up to half the batch, then ingest's, then more of the
//! other writes if ingest left room: a saturated ingest can neither push a run's writes
//! behind thousands of inserts nor take every batch, and a quiet ingest leaves the whole
//! batch to the rest.
//!
//! The writer thread sleeps (parks) while both queues are empty; every send wakes it.

use std::thread::Thread;
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::oneshot;

use super::{Command, Msg};

/// How long the idle writer sleeps before it looks at its queues again even unwoken (it
/// notices this way that the store was dropped).
const IDLE: Duration = Duration::from_millis(100);

/// The sending side, held by the [`super::Writer`].
pub(super) struct Senders {
    ingest: mpsc::Sender<Msg>,
    work: mpsc::Sender<Msg>,
}

/// The receiving side, owned by the writer thread.
pub(super) struct Lanes {
    ingest: mpsc::Receiver<Msg>,
    work: mpsc::Receiver<Msg>,
}

/// Two queues of `capacity` commands each.
pub(super) fn lanes(capacity: usize) -> (Senders, Lanes) {
    let (ingest_tx, ingest_rx) = mpsc::channel(capacity.max(1));
    let (work_tx, work_rx) = mpsc::channel(capacity.max(1));
    (
        Senders {
            ingest: ingest_tx,
            work: work_tx,
        },
        Lanes {
            ingest: ingest_rx,
            work: work_rx,
        },
    )
}

impl Senders {
    /// Queue `msg` (a command in its lane, a shutdown with the other writes) and wake the
    /// writer thread. `Err` once the writer no longer takes commands.
    pub(super) async fn send(&self, msg: Msg, writer: &Thread) -> Result<(), ()> {
        let lane = match &msg {
            Msg::Cmd(cmd) if cmd.atomic() => &self.ingest,
            _ => &self.work,
        };
        let sent = lane.send(msg).await.map_err(|_| ());
        writer.unpark();
        sent
    }

    /// Commands queued in each lane: `(ingest, other writes)`.
    #[cfg(test)]
    pub(super) fn queued(&self) -> (usize, usize) {
        let queued = |tx: &mpsc::Sender<Msg>| tx.max_capacity() - tx.capacity();
        (queued(&self.ingest), queued(&self.work))
    }
}

/// What a look at one queue found.
enum Found {
    Msg(Msg),
    Empty,
    Closed,
}

fn look(rx: &mut mpsc::Receiver<Msg>) -> Found {
    match rx.try_recv() {
        Ok(msg) => Found::Msg(msg),
        Err(TryRecvError::Empty) => Found::Empty,
        Err(TryRecvError::Disconnected) => Found::Closed,
    }
}

impl Lanes {
    /// Block until a message is queued in either lane (the other writes first). `None`
    /// once both lanes are closed and empty.
    pub(super) fn wait(&mut self) -> Option<Msg> {
        loop {
            let work = look(&mut self.work);
            if let Found::Msg(msg) = work {
                return Some(msg);
            }
            let ingest = look(&mut self.ingest);
            match (work, ingest) {
                (_, Found::Msg(msg)) => return Some(msg),
                (Found::Closed, Found::Closed) => return None,
                _ => std::thread::park_timeout(IDLE),
            }
        }
    }

    /// Refuse new commands in both lanes; what is queued can still be taken.
    pub(super) fn close(&mut self) {
        self.ingest.close();
        self.work.close();
    }

    /// Take queued messages into `batch` until it holds `max` commands: the other writes
    /// first, up to half of `max`; then ingest's; then the other writes again. A shutdown
    /// request goes to `shutdown`. Returns how many commands were taken.
    pub(super) fn take(
        &mut self,
        batch: &mut Vec<Box<dyn Command>>,
        shutdown: &mut Vec<oneshot::Sender<()>>,
        max: usize,
    ) -> usize {
        let before = batch.len();
        let reserve = max.div_ceil(2);
        take_from(&mut self.work, batch, shutdown, reserve.min(max));
        take_from(&mut self.ingest, batch, shutdown, max);
        take_from(&mut self.work, batch, shutdown, max);
        batch.len() - before
    }
}

/// Take from `rx` while `batch` holds fewer than `until` commands.
fn take_from(
    rx: &mut mpsc::Receiver<Msg>,
    batch: &mut Vec<Box<dyn Command>>,
    shutdown: &mut Vec<oneshot::Sender<()>>,
    until: usize,
) {
    while batch.len() < until {
        match rx.try_recv() {
            Ok(Msg::Cmd(cmd)) => batch.push(cmd),
            Ok(Msg::Shutdown(done)) => shutdown.push(done),
            Err(_) => return,
        }
    }
}
