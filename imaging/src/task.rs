//! Progress reporting and cancellation for long operations.
//!
//! Every long operation takes a [`Task`]: a progress sink plus a cancel token.
//! Progress is data: the CLI turns it into a status line, the TUI into events,
//! tests into assertions. Workers check [`Task::check_cancelled`] at chunk
//! boundaries; cancelling takes the same cleanup path as a failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Receives progress of one operation. Implementations must be cheap: `advance`
/// is called from worker threads for every frame.
pub trait Progress: Send + Sync {
    /// A new phase starts ("reading partition 2", "verifying image"), `total`
    /// bytes of work (0 when unknown).
    fn begin(&self, _phase: &str, _total: u64) {}
    /// `n` more bytes of the current phase are done.
    fn advance(&self, _n: u64) {}
    /// A message worth showing the user (a fallback, a skipped step).
    fn note(&self, _msg: &str) {}
    /// The current phase is complete.
    fn finish(&self) {}
}

/// The default sink: says nothing.
#[derive(Debug, Default)]
pub struct Silent;
impl Progress for Silent {}

/// Shared cancel flag; clones observe the same state.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// The shared flag, for signal handlers that set it directly.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// Marker error for a cancelled operation, wrapped by each module's error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled by the user")]
pub struct Cancelled;

/// Context of one long operation.
#[derive(Clone)]
pub struct Task {
    pub progress: Arc<dyn Progress>,
    pub cancel: CancelToken,
}

impl Default for Task {
    fn default() -> Self {
        Self { progress: Arc::new(Silent), cancel: CancelToken::new() }
    }
}

impl Task {
    pub fn new(progress: Arc<dyn Progress>, cancel: CancelToken) -> Self {
        Self { progress, cancel }
    }

    pub fn check_cancelled(&self) -> Result<(), Cancelled> {
        if self.cancel.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}
