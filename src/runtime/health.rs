//! What `/readyz` answers: ready once the reference tables are loaded and records flow, and
//! not ready while anything waits on the schema registry (an outage or a configuration
//! fault such as expired credentials), with the reason in the body.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

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
}

impl Health {
    pub fn set_processing(&self, on: bool) {
        self.processing.store(on, Ordering::Relaxed);
    }

    /// `Ok(())` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
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
