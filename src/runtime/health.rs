//! What `/readyz` and `/healthz` answer.
//!
//! Ready once the reference tables are loaded and records flow, and not ready while anything
//! waits on the schema registry (an outage or a configuration fault such as expired
//! credentials), with the reason in the body. Live (`/healthz`) unless a stream thread is
//! stuck: in one step (a record, a commit, its timers) for longer than
//! `limits.stuck_thread_timeout`, not counting restores and registry waits, which take as
//! long as they take and are reported elsewhere.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics::{counter, gauge};

use crate::codec::RegistryError;
use crate::metrics as m;

#[derive(Default)]
pub struct Health {
    /// Reference tables loaded and the consumer running.
    processing: AtomicBool,
    /// Stream threads and loaders waiting on the registry right now.
    waiting_on_registry: AtomicUsize,
    /// The last registry fault, for the `/readyz` body (no secrets: URLs carry none).
    last_fault: Mutex<Option<String>>,
    /// One per stream thread, in thread order.
    threads: Mutex<Vec<Arc<Beat>>>,
    /// A step longer than this makes its thread stuck (ms; 0: never).
    stuck_after_ms: AtomicU64,
}

/// Milliseconds since the first call in this process, plus one (0 means "not in a step").
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// A stream thread's liveness: when its current step began.
#[derive(Default)]
pub struct Beat {
    /// [`now_ms`] at the start of the current step; 0 between steps.
    step_since: AtomicU64,
    /// In a step that may take long without being stuck (a restore).
    exempt: AtomicBool,
}

impl Beat {
    /// Marks the start of a step; it ends when the guard drops.
    pub fn step(&self) -> Step<'_> {
        self.step_since.store(now_ms(), Ordering::Relaxed);
        Step(self)
    }

    /// Marks the step as one that may take long (restoring a task) until the guard drops.
    pub fn exempt(&self) -> Exempt<'_> {
        self.exempt.store(true, Ordering::Relaxed);
        Exempt(self)
    }

    /// How long the current step has lasted, unless there is none or it is exempt.
    fn stuck_for(&self, now: u64) -> Option<Duration> {
        let since = self.step_since.load(Ordering::Relaxed);
        (since != 0 && !self.exempt.load(Ordering::Relaxed))
            .then(|| Duration::from_millis(now.saturating_sub(since)))
    }
}

/// The current step of a stream thread; dropping it ends the step.
pub struct Step<'a>(&'a Beat);

impl Drop for Step<'_> {
    fn drop(&mut self) {
        self.0.step_since.store(0, Ordering::Relaxed);
    }
}

/// A long step that is not a hang; dropping it ends the exemption.
pub struct Exempt<'a>(&'a Beat);

impl Drop for Exempt<'_> {
    fn drop(&mut self) {
        self.0.exempt.store(false, Ordering::Relaxed);
    }
}

impl Health {
    /// Health that counts a stream thread as stuck after `stuck_after` in one step.
    pub fn new(stuck_after: Duration) -> Health {
        let health = Health::default();
        health
            .stuck_after_ms
            .store(stuck_after.as_millis() as u64, Ordering::Relaxed);
        health
    }

    /// Registers the next stream thread; it marks its steps on the returned beat.
    pub fn stream_thread(&self) -> Arc<Beat> {
        let beat = Arc::new(Beat::default());
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(beat.clone());
        beat
    }

    /// `Ok(())` while no stream thread is stuck, else which and for how long. Updates
    /// `leadflow_stream_threads{state}`.
    pub fn liveness(&self) -> Result<(), String> {
        let limit = self.stuck_after_ms.load(Ordering::Relaxed);
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        // A registry outage holds steps up; /readyz reports it, and a restart would not help.
        let registry = self.waiting_on_registry.load(Ordering::Relaxed) > 0;
        let now = now_ms();
        let stuck: Vec<String> = threads
            .iter()
            .enumerate()
            .filter_map(|(i, beat)| {
                let long = beat.stuck_for(now)?;
                (limit > 0 && !registry && long > Duration::from_millis(limit)).then(|| {
                    format!(
                        "stream thread {i} has been in one step for {}s",
                        long.as_secs()
                    )
                })
            })
            .collect();
        gauge!(m::STREAM_THREADS, "state" => "stuck").set(stuck.len() as f64);
        gauge!(m::STREAM_THREADS, "state" => "running").set((threads.len() - stuck.len()) as f64);
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "stuck: {} (limits.stuck_thread_timeout is {}s)",
                stuck.join(", "),
                limit / 1000
            ))
        }
    }

    pub fn set_processing(&self, on: bool) {
        self.processing.store(on, Ordering::Relaxed);
    }

    /// `Ok(())` when ready, else why not. A stuck instance is not ready either.
    pub fn readiness(&self) -> Result<(), String> {
        self.liveness()?;
        if self.waiting_on_registry.load(Ordering::Relaxed) > 0 {
            let fault = self
                .last_fault
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(format!("waiting on the schema registry: {fault}"));
        }
        if !self.processing.load(Ordering::Relaxed) {
            return Err("starting: loading reference tables".into());
        }
        Ok(())
    }

    /// Starts (or continues) a wait on the registry after `error`; the wait ends when the
    /// returned guard drops. Counts the fault by kind.
    pub fn registry_fault<'a>(
        &'a self,
        error: &RegistryError,
        wait: Option<RegistryWait<'a>>,
    ) -> RegistryWait<'a> {
        counter!(m::REGISTRY_RETRIES).increment(1);
        counter!(m::REGISTRY_FAULTS, "kind" => error.fault_kind()).increment(1);
        *self.last_fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
        wait.unwrap_or_else(|| {
            let now = self.waiting_on_registry.fetch_add(1, Ordering::Relaxed) + 1;
            gauge!(m::REGISTRY_WAITING).set(now as f64);
            RegistryWait(self)
        })
    }
}

/// One caller waiting on the registry; dropping it ends the wait.
pub struct RegistryWait<'a>(&'a Health);

impl Drop for RegistryWait<'_> {
    fn drop(&mut self) {
        let now = self.0.waiting_on_registry.fetch_sub(1, Ordering::Relaxed) - 1;
        gauge!(m::REGISTRY_WAITING).set(now as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_stuck_after_one_step_longer_than_the_limit_unless_exempt() {
        let health = Health::new(Duration::from_millis(200));
        health.set_processing(true);
        let (first, second) = (health.stream_thread(), health.stream_thread());
        assert!(health.liveness().is_ok());
        // Short steps, and waiting between steps, are never stuck.
        drop(first.step());
        let step = second.step();
        assert!(health.liveness().is_ok());
        let deadline = Instant::now() + Duration::from_secs(10);
        let why = loop {
            match health.liveness() {
                Err(why) => break why,
                Ok(()) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(()) => panic!("a step of 10s is not stuck with a limit of 200ms"),
            }
        };
        assert!(why.contains("stream thread 1"), "{why}");
        assert!(health.readiness().is_err());
        // A restore may take long.
        let exempt = second.exempt();
        assert!(health.liveness().is_ok());
        drop(exempt);
        assert!(health.liveness().is_err());
        drop(step);
        assert!(health.liveness().is_ok());
        assert!(health.readiness().is_ok());
        // No limit: never stuck.
        let never = Health::new(Duration::ZERO);
        let beat = never.stream_thread();
        let _step = beat.step();
        std::thread::sleep(Duration::from_millis(5));
        assert!(never.liveness().is_ok());
    }

    #[test]
    fn not_ready_while_anyone_waits_on_the_registry() {
        let health = Health::default();
        assert!(health.readiness().unwrap_err().contains("starting"));
        health.set_processing(true);
        assert!(health.readiness().is_ok());
        let fault = RegistryError::Refused {
            url: "http://r".into(),
            status: 401,
            code: Some(40101),
            message: "Unauthorized".into(),
            hint: "check the credentials",
        };
        let first = health.registry_fault(&fault, None);
        let first = health.registry_fault(&fault, Some(first));
        let second = health.registry_fault(&fault, None);
        let why = health.readiness().unwrap_err();
        assert!(why.contains("HTTP 401"), "{why}");
        drop(first);
        assert!(health.readiness().is_err());
        drop(second);
        assert!(health.readiness().is_ok());
    }
}
