//! The routing script in force, replaceable while the processor runs (hot reload).
//!
//! Stream threads read the generation (one atomic load per record) and take the new script
//! between two records when it changed; a record is always decided by one script from start
//! to end, and every decision names the version that made it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Rules;

pub struct LiveRules {
    current: Mutex<Arc<Rules>>,
    /// Bumped by every replacement.
    generation: AtomicU64,
}

impl LiveRules {
    pub fn new(rules: Arc<Rules>) -> LiveRules {
        LiveRules {
            current: Mutex::new(rules),
            generation: AtomicU64::new(0),
        }
    }

    /// The script in force now.
    pub fn current(&self) -> Arc<Rules> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many times the script was replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts `rules` in force; returns the script it replaces.
    pub fn replace(&self, rules: Arc<Rules>) -> Arc<Rules> {
        let old = std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(|e| e.into_inner()),
            rules,
        );
        self.generation.fetch_add(1, Ordering::Release);
        old
    }
}

/// A stream thread's copy of the script in force, refreshed between records.
pub struct RulesView {
    live: Option<Arc<LiveRules>>,
    rules: Arc<Rules>,
    generation: u64,
}

impl RulesView {
    /// A fixed script (tests, benches, `rules` commands).
    pub fn fixed(rules: Arc<Rules>) -> RulesView {
        RulesView {
            live: None,
            rules,
            generation: 0,
        }
    }

    /// The script of `live`, following its replacements.
    pub fn following(live: Arc<LiveRules>) -> RulesView {
        RulesView {
            rules: live.current(),
            generation: live.generation(),
            live: Some(live),
        }
    }

    /// Takes the script in force if it was replaced since the last call; returns whether it
    /// was.
    pub fn refresh(&mut self) -> bool {
        let Some(live) = &self.live else {
            return false;
        };
        let generation = live.generation();
        if generation == self.generation {
            return false;
        }
        self.rules = live.current();
        self.generation = generation;
        true
    }

    pub fn get(&self) -> &Arc<Rules> {
        &self.rules
    }
}

impl std::ops::Deref for RulesView {
    type Target = Arc<Rules>;

    fn deref(&self) -> &Arc<Rules> {
        &self.rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::ScriptLimits;

    fn rules(queue: &str) -> Arc<Rules> {
        let source =
            format!(r#"fn route(lead) {{ #{{ priority: "P2", queue: "{queue}", reasons: [] }} }}"#);
        Arc::new(Rules::compile("t.rhai", &source, &ScriptLimits::default()).unwrap())
    }

    #[test]
    fn a_view_takes_a_replacement_at_its_next_refresh_only() {
        let (one, two) = (rules("one"), rules("two"));
        let live = Arc::new(LiveRules::new(one.clone()));
        let mut view = RulesView::following(live.clone());
        assert!(!view.refresh());
        assert_eq!(view.get().version(), one.version());
        let old = live.replace(two.clone());
        assert_eq!(old.version(), one.version());
        assert_eq!(
            view.get().version(),
            one.version(),
            "not before the refresh"
        );
        assert!(view.refresh());
        assert_eq!(view.get().version(), two.version());
        assert!(!view.refresh());
        let mut fixed = RulesView::fixed(one.clone());
        live.replace(one);
        assert!(!fixed.refresh());
    }
}
