//! A bound on closing, once a run has stopped and committed (Kafka Streams'
//! `close(timeout)`).
//!
//! After the last commit nothing is owed: outputs are delivered, offsets and state committed.
//! What is left is the clients' and the store's close: the group consumer leaves the group,
//! RocksDB finishes its background work, blocking threads end. A client that never finishes
//! closing must not keep the process (and a supervisor waiting for it) alive: past
//! [`CLOSE_TIMEOUT`] the process says what it was closing and exits with the run's code.
//! Exiting there loses nothing: RocksDB's log is written, and a member that did not leave is
//! dropped from the group after its session timeout.

use std::sync::Mutex;
use std::time::Duration;

/// How long closing may take.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

static PHASE: Mutex<&str> = Mutex::new("closing");

/// Notes what the close is doing now, for the message if it takes too long.
pub fn phase(what: &'static str) {
    tracing::debug!(phase = what, "close");
    *PHASE.lock().unwrap_or_else(|e| e.into_inner()) = what;
}

/// Exits the process [`CLOSE_TIMEOUT`] from now if it is still running then: successfully,
/// or with the run's `error` as `leadflow run` reports it.
pub fn bound(error: Option<String>) {
    let spawned = std::thread::Builder::new()
        .name("close-bound".into())
        .spawn(move || {
            std::thread::sleep(CLOSE_TIMEOUT);
            let phase = *PHASE.lock().unwrap_or_else(|e| e.into_inner());
            tracing::warn!(
                seconds = CLOSE_TIMEOUT.as_secs(),
                phase,
                "closing takes too long; exiting without waiting (everything is committed)"
            );
            match error {
                None => std::process::exit(0),
                Some(e) => {
                    eprintln!("error: {}", crate::redact::redact(&e));
                    std::process::exit(1)
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot bound the close");
    }
}
