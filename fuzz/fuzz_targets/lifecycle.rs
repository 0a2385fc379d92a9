//! Arbitrary command lifecycles (start, validate, execute, tasks, end-action, crashes and
//! recoveries) on the real table and journal, far deeper and wider than the exhaustive check.
//!
//! It walks the lifecycle model of `lockcore-model` (the same specification, the same real
//! engine replayed through the real API), choosing each step from the input, and checks every
//! `always` property of the model after every step: mutual exclusion, no stale lock, no lost
//! lock, no deadlock, refinement of the table and of the journal, fencing across restarts. A
//! path that can go no further must have finished every command.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use lockcore_model::lifecycle::{Action, Config, Lifecycle, Phase};
use stateright::{Expectation, Model};

fn walk(u: &mut Unstructured<'_>) -> Result<()> {
    let cfg = Config {
        commands: u.int_in_range(1..=6)?,
        keys: u.int_in_range(1..=5)?,
        tasks: u.int_in_range(0..=3)?,
        restarts: u.int_in_range(0..=3)?,
    };
    let model = Lifecycle::new(cfg, None);
    let always: Vec<_> = model.properties().into_iter().filter(|p| p.expectation == Expectation::Always).collect();
    let mut state = model.init_states().remove(0);
    let mut path: Vec<Action> = Vec::new();
    let mut actions = Vec::new();
    for _ in 0..160 {
        actions.clear();
        model.actions(&state, &mut actions);
        if actions.is_empty() {
            let done = state.commands.iter().all(|c| matches!(c.phase, Phase::Done(_)));
            assert!(done, "{cfg}: stopped with unfinished commands after {path:?}");
            return Ok(());
        }
        let action = actions[u.choose_index(actions.len())?];
        let Some(next) = model.next_state(&state, action) else { continue };
        state = next;
        path.push(action);
        for p in &always {
            assert!((p.condition)(&model, &state), "{cfg}: {:?} fails after {path:?}\nstate: {state:?}", p.name);
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = walk(&mut Unstructured::new(data));
});
