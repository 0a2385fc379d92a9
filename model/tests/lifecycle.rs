//! The lifecycle model passes on the real engine, and each deliberately broken variant fails
//! the property it names, with a counterexample.

use lockcore_model::lifecycle::{Config, Lifecycle, Mutant, DEADLOCK, FINISHES, LOST, MUTEX, STALE};
use stateright::{Checker, Expectation, Model};

fn small() -> Config {
    Config { commands: 2, keys: 2, tasks: 1, restarts: 1 }
}

#[test]
fn the_real_engine_satisfies_every_property_and_reaches_every_phase() {
    for cfg in [small(), Config { commands: 3, keys: 2, tasks: 1, restarts: 1 }] {
        let model = Lifecycle::new(cfg, None);
        let properties = model.properties();
        let checker = model.checker().threads(2).spawn_bfs().join();
        checker.assert_properties();
        for p in properties {
            let found = checker.discovery(p.name).is_some();
            assert_eq!(found, matches!(p.expectation, Expectation::Sometimes), "{cfg}: {}", p.name);
        }
        assert!(checker.unique_state_count() > 1000, "{cfg}: {} states", checker.unique_state_count());
    }
}

#[test]
fn every_mutant_fails_the_property_it_names() {
    for mutant in Mutant::ALL {
        let checker = Lifecycle::new(small(), Some(mutant)).checker().threads(2).spawn_bfs().join();
        let path = checker.discovery(mutant.breaks());
        assert!(path.is_some(), "mutant {} passed {:?}", mutant.name(), mutant.breaks());
        // Breaking how locks are used must not look like a broken table.
        assert!(checker.discovery(MUTEX).is_none(), "mutant {} broke mutual exclusion", mutant.name());
    }
}

#[test]
fn one_key_at_a_time_deadlocks_and_never_finishes() {
    let checker = Lifecycle::new(small(), Some(Mutant::OneAtATime)).checker().spawn_bfs().join();
    for p in [DEADLOCK, FINISHES] {
        assert!(checker.discovery(p).is_some(), "{p}");
    }
    let checker = Lifecycle::new(small(), Some(Mutant::NoReleaseOnValidateFail)).checker().spawn_bfs().join();
    assert!(checker.discovery(STALE).is_some());
    let checker = Lifecycle::new(small(), Some(Mutant::EndBeforeTasks)).checker().spawn_bfs().join();
    assert!(checker.discovery(LOST).is_some());
}
