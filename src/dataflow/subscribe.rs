//! Push subscriptions: every change to a relation, epoch by epoch, as it happens.
//!
//! The runtime delivers to each subscriber, in order: optionally a snapshot (the current
//! contents as insertions, at the current epoch), then each epoch's consolidated changes
//! to the relation, and after every epoch a progress mark — "no more changes at or
//! before this epoch will come" — also sent once a second when nothing happens, so that
//! clients see time advance and closed connections are noticed.
//!
//! A subscriber's buffer is bounded (in rows). A subscriber that falls behind is cut
//! off with an error instead of stalling the dataflow or growing without bound; it can
//! resume with `AS OF <last epoch it saw>` while the runtime still retains that history
//! (a configurable window, kept for every relation that has had a subscriber).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::ChangeBatch;
use crate::error::Error;

/// What a subscriber receives.
#[derive(Debug)]
pub enum SubscriptionEvent {
    /// One epoch's changes to the relation (a snapshot is delivered as one such event).
    Changes {
        epoch: u64,
        batches: Vec<ChangeBatch>,
    },
    /// Every change at or before `epoch` has been delivered.
    Progress { epoch: u64 },
}

/// State shared between the runtime (sender) and the subscriber (receiver).
#[derive(Debug, Default)]
pub struct SubscriberShared {
    /// Rows sent but not yet taken by the subscriber.
    pub pending_rows: AtomicUsize,
    /// Set by the runtime when it cut the subscriber off (buffer overflow).
    pub overflowed: AtomicBool,
    /// Set when the relation was dropped.
    pub relation_dropped: AtomicBool,
}

/// The receiving end of a subscription.
pub struct SubscriptionReceiver {
    pub rx: mpsc::Receiver<SubscriptionEvent>,
    pub shared: Arc<SubscriberShared>,
    /// The epoch the subscription starts at (its snapshot's epoch, or `AS OF`).
    pub start_epoch: u64,
}

impl SubscriptionReceiver {
    /// The next event; `Err` when the runtime ended the subscription.
    pub async fn next(&mut self) -> Result<SubscriptionEvent, Error> {
        match self.rx.recv().await {
            Some(e) => {
                if let SubscriptionEvent::Changes { batches, .. } = &e {
                    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
                    self.shared.pending_rows.fetch_sub(n, Ordering::Relaxed);
                }
                Ok(e)
            }
            None => Err(self.end_reason()),
        }
    }

    fn end_reason(&self) -> Error {
        if self.shared.overflowed.load(Ordering::Relaxed) {
            Error::invalid_with(
                "53400",
                "subscription ended: the client read too slowly and its buffer overflowed; \
                 resume with SUBSCRIBE ... AS OF <the last epoch you received>",
            )
        } else if self.shared.relation_dropped.load(Ordering::Relaxed) {
            Error::invalid_with("42P01", "subscription ended: the relation was dropped")
        } else {
            Error::internal("subscription ended: the dataflow stopped")
        }
    }
}

/// The runtime's end of one subscription.
pub(crate) struct Subscriber {
    pub tx: mpsc::Sender<SubscriptionEvent>,
    pub shared: Arc<SubscriberShared>,
    pub max_pending_rows: usize,
}

impl Subscriber {
    /// Deliver an event; false when the subscriber is gone or was cut off.
    pub fn deliver(&self, event: SubscriptionEvent) -> bool {
        self.deliver_with_limit(event, self.max_pending_rows)
    }

    /// Deliver the catch-up of a resumed subscription: bounded by the retained history
    /// (which the runtime caps), not by the live buffer.
    pub fn deliver_catch_up(&self, event: SubscriptionEvent) -> bool {
        self.deliver_with_limit(event, usize::MAX)
    }

    fn deliver_with_limit(&self, event: SubscriptionEvent, limit: usize) -> bool {
        if let SubscriptionEvent::Changes { batches, .. } = &event {
            let n: usize = batches.iter().map(|b| b.num_rows()).sum();
            let pending = self.shared.pending_rows.fetch_add(n, Ordering::Relaxed) + n;
            if pending > limit {
                self.shared.overflowed.store(true, Ordering::Relaxed);
                return false;
            }
        }
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.overflowed.store(true, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Recent changes of one relation, for `AS OF` resumes.
pub(crate) struct History {
    /// Complete from this epoch (exclusive): resuming `AS OF e` works for `e >= since`.
    pub since: u64,
    pub epochs: VecDeque<(u64, Instant, Vec<ChangeBatch>)>,
    /// Entries up to this epoch are on disk (written by checkpoints).
    pub persisted_upto: u64,
    /// Persisted entries that fell out of retention: the next checkpoint deletes them.
    pub expired: Vec<u64>,
    /// The stored history is complete only after this epoch (an entry failed to store).
    pub stored_since: u64,
}

impl History {
    pub fn new(since: u64) -> Self {
        Self {
            since,
            epochs: VecDeque::new(),
            persisted_upto: 0,
            expired: vec![],
            stored_since: 0,
        }
    }

    pub fn push(
        &mut self,
        epoch: u64,
        batches: Vec<ChangeBatch>,
        retention: Duration,
        max_rows: usize,
    ) {
        self.epochs.push_back((epoch, Instant::now(), batches));
        let mut rows: usize = self
            .epochs
            .iter()
            .map(|(_, _, b)| b.iter().map(|b| b.num_rows()).sum::<usize>())
            .sum();
        while let Some((e, at, b)) = self.epochs.front() {
            if at.elapsed() <= retention && rows <= max_rows {
                break;
            }
            rows -= b.iter().map(|b| b.num_rows()).sum::<usize>();
            self.since = *e;
            if *e <= self.persisted_upto {
                self.expired.push(*e);
            }
            self.epochs.pop_front();
        }
    }
}

/// How subscriptions behave.
#[derive(Clone, Debug)]
pub struct SubscribeConfig {
    /// Rows a subscriber may have waiting before it is cut off.
    pub max_pending_rows: usize,
    /// How long changes are kept for `AS OF` resumes.
    pub retention: Duration,
    /// At most this many rows of history per relation.
    pub retention_rows: usize,
}

impl Default for SubscribeConfig {
    fn default() -> Self {
        Self {
            max_pending_rows: 1_000_000,
            retention: Duration::from_secs(300),
            retention_rows: 1_000_000,
        }
    }
}
