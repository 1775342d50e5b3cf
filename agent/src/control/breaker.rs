//! A circuit breaker as a small state machine: Admit (closed), Probe (half-open), Shed (open).
//!
//! It judges observations (failure ratio, slow-call ratio, volume) that the rule engine
//! evaluates each interval; it never sees individual calls. Defaults follow Hystrix,
//! resilience4j and Sentinel:
//! - nothing is judged below `min_volume`;
//! - Admit -> Shed when the failure or slow ratio reaches its *open* threshold;
//! - Shed lasts `base * multiplier^(n-1)` (capped at `max`, n = consecutive openings), with
//!   jitter, then Probe;
//! - Probe admits a ramp of traffic ratios, one step per `step`; a ratio above the *close*
//!   threshold (lower than the open one: hysteresis) sends it back to Shed with a longer wait;
//!   calls coming for `probe_timeout` without a healthy verdict (too few to judge, or a ratio
//!   unknown) do too; after the last step it closes (Admit) and forgets its openings;
//! - no calls at all in Probe (volume 0 or absent) is not a failure: Probe holds, at its
//!   step, for as long as the quiet lasts, and the timeout counts again from the first call,
//!   so traffic that comes back meets the probe ramp, not a Shed of up to `wait_max`;
//! - a missing input (`None`: no data, or stale) holds the state: only time moves Shed to Probe;
//! - force-open and force-close pin the state until reset, and survive reloads and restarts.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::backoff::{Backoff, Jitter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Admit,
    Probe,
    Shed,
}

impl State {
    /// `steadfast_breaker_state` value: 0 admit, 1 probe, 2 shed.
    pub fn as_number(self) -> u8 {
        match self {
            State::Admit => 0,
            State::Probe => 1,
            State::Shed => 2,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            State::Admit => "admit",
            State::Probe => "probe",
            State::Shed => "shed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Force {
    Open,
    Close,
}

pub use crate::rules::spec::breaker::{Observation, Spec};

/// A change of state, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: String,
}

#[derive(Debug)]
pub struct Breaker {
    spec: Spec,
    state: State,
    since: Instant,
    /// The open wait: its attempt count is the consecutive openings without a close in
    /// between (the agent's one backoff, with the spec's spread jitter).
    wait: Backoff,
    shed_until: Option<Instant>,
    probe_step: usize,
    step_started: Instant,
    /// Since when Probe has had calls but no healthy verdict (the probe timeout's clock): the
    /// last healthy verdict, or the last evaluation that saw no calls at all.
    last_healthy: Instant,
    /// A healthy verdict arrived during the current probe step.
    healthy_in_step: bool,
    force: Option<Force>,
}

enum Verdict {
    Unknown,
    Healthy,
    Tripped(String),
}

impl Breaker {
    pub fn new(spec: Spec, now: Instant) -> Self {
        let wait = Backoff::new(spec.wait_base, spec.wait_max)
            .with_multiplier(spec.wait_multiplier)
            .with_jitter(Jitter::Spread(spec.jitter));
        Self {
            wait,
            spec,
            state: State::Admit,
            since: now,
            shed_until: None,
            probe_step: 0,
            step_started: now,
            last_healthy: now,
            healthy_in_step: false,
            force: None,
        }
    }

    /// Without jitter: waits are exactly `base * multiplier^(n-1)`, capped.
    pub fn without_jitter(mut self) -> Self {
        self.wait = self.wait.with_jitter(Jitter::None);
        self
    }

    pub fn state(&self) -> State {
        match self.force {
            Some(Force::Open) => State::Shed,
            Some(Force::Close) => State::Admit,
            None => self.state,
        }
    }

    pub fn force(&self) -> Option<Force> {
        self.force
    }

    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn openings(&self) -> u32 {
        self.wait.attempt()
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Share of traffic an application should let through now.
    pub fn admit_ratio(&self) -> f64 {
        match self.state() {
            State::Admit => 1.0,
            State::Shed => 0.0,
            State::Probe => self.spec.ramp.get(self.probe_step).copied().unwrap_or(1.0),
        }
    }

    /// When the current Shed period ends (for the API).
    pub fn shed_until(&self) -> Option<Instant> {
        (self.state == State::Shed)
            .then_some(self.shed_until)
            .flatten()
    }

    /// The wait for the n-th consecutive opening, before jitter.
    pub fn wait_for(&self, n: u32) -> Duration {
        self.wait.ceiling_at(n.saturating_sub(1))
    }

    fn verdict(
        &self,
        obs: &Observation,
        threshold: fn(&Spec) -> (Option<f64>, Option<f64>),
    ) -> Verdict {
        let Some(volume) = obs.volume else {
            return Verdict::Unknown;
        };
        if volume < self.spec.min_volume {
            return Verdict::Unknown;
        }
        let (fail_t, slow_t) = threshold(&self.spec);
        let mut unknown = false;
        for (name, value, t) in [
            ("failure ratio", obs.failure_ratio, fail_t),
            ("slow ratio", obs.slow_ratio, slow_t),
        ] {
            let Some(t) = t else { continue };
            match value {
                Some(v) if v >= t => return Verdict::Tripped(format!("{name} {v:.3} >= {t}")),
                Some(_) => {}
                None => unknown = true,
            }
        }
        if unknown {
            Verdict::Unknown
        } else {
            Verdict::Healthy
        }
    }

    fn enter(&mut self, to: State, now: Instant, reason: String) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        self.since = now;
        match to {
            State::Shed => {
                self.shed_until = Some(now + self.wait.next_delay());
            }
            State::Probe => {
                self.probe_step = 0;
                self.step_started = now;
                self.last_healthy = now;
                self.healthy_in_step = false;
            }
            State::Admit => {
                // Closing resets the breaker's statistics: the next opening waits `base` again.
                self.wait.reset();
                self.shed_until = None;
            }
        }
        (from != to).then_some(Transition { from, to, reason })
    }

    /// Judges one evaluation. Returns the transition, if any.
    pub fn observe(&mut self, now: Instant, obs: Observation) -> Option<Transition> {
        if self.force.is_some() {
            return None;
        }
        match self.state {
            State::Admit => match self.verdict(&obs, |s| (s.open_failure_ratio, s.open_slow_ratio))
            {
                Verdict::Tripped(why) => self.enter(State::Shed, now, why),
                _ => None,
            },
            State::Shed => {
                if self.shed_until.is_some_and(|t| now >= t) {
                    self.enter(State::Probe, now, "open wait over".into())
                } else {
                    None
                }
            }
            State::Probe => {
                match self.verdict(&obs, |s| (s.close_failure_ratio, s.close_slow_ratio)) {
                    Verdict::Tripped(why) => {
                        return self.enter(State::Shed, now, format!("probe failed: {why}"))
                    }
                    Verdict::Healthy => {
                        self.last_healthy = now;
                        self.healthy_in_step = true;
                    }
                    // No calls at all: nothing to judge, and no reason to shed. The timeout
                    // is for calls that come but cannot be judged healthy.
                    Verdict::Unknown if obs.volume.is_none_or(|v| v <= 0.0) => {
                        self.last_healthy = now;
                    }
                    Verdict::Unknown => {}
                }
                if now.duration_since(self.last_healthy) >= self.spec.probe_timeout {
                    return self.enter(
                        State::Shed,
                        now,
                        "probe timed out without a healthy verdict".into(),
                    );
                }
                if self.healthy_in_step && now.duration_since(self.step_started) >= self.spec.step {
                    if self.probe_step + 1 >= self.spec.ramp.len() {
                        return self.enter(State::Admit, now, "probe ramp completed".into());
                    }
                    self.probe_step += 1;
                    self.step_started = now;
                    self.healthy_in_step = false;
                }
                None
            }
        }
    }

    /// Pins the state (force-open: Shed; force-close: Admit) until `reset`.
    pub fn set_force(&mut self, force: Option<Force>, now: Instant) {
        if self.force != force {
            self.force = force;
            self.since = now;
        }
    }

    /// Clears any force and starts over in Admit with no openings.
    pub fn reset(&mut self, now: Instant) {
        self.force = None;
        self.enter(State::Admit, now, "reset".into());
        self.since = now;
    }

    /// Takes over the live state of `old` (same name, reloaded). If the spec changed in a way
    /// that changes judgement, the state restarts in Admit; forces always survive.
    pub fn inherit(&mut self, old: Breaker) {
        self.force = old.force;
        if old.spec == self.spec {
            self.state = old.state;
            self.since = old.since;
            self.wait.set_attempt(old.wait.attempt());
            self.shed_until = old.shed_until;
            self.probe_step = old.probe_step;
            self.step_started = old.step_started;
            self.last_healthy = old.last_healthy;
            self.healthy_in_step = old.healthy_in_step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            open_failure_ratio: Some(0.5),
            close_failure_ratio: Some(0.2),
            open_slow_ratio: Some(0.8),
            close_slow_ratio: Some(0.4),
            min_volume: 10.0,
            wait_base: Duration::from_secs(10),
            wait_multiplier: 2.0,
            wait_max: Duration::from_secs(60),
            jitter: 0.0,
            ramp: vec![0.1, 0.5, 1.0],
            step: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(30),
        }
    }

    fn obs(f: f64, s: f64, v: f64) -> Observation {
        Observation {
            failure_ratio: Some(f),
            slow_ratio: Some(s),
            volume: Some(v),
        }
    }

    const OK: Observation = Observation {
        failure_ratio: Some(0.0),
        slow_ratio: Some(0.0),
        volume: Some(100.0),
    };

    async fn at(start: Instant, secs: u64) -> Instant {
        tokio::time::advance(Duration::from_secs(secs).saturating_sub(start.elapsed())).await;
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn every_transition_of_the_state_machine() {
        let t0 = Instant::now();
        let mut b = Breaker::new(spec(), t0).without_jitter();
        assert_eq!((b.state(), b.admit_ratio()), (State::Admit, 1.0));

        // Below the minimum volume nothing is judged, however bad.
        assert_eq!(b.observe(at(t0, 1).await, obs(1.0, 1.0, 9.0)), None);
        // Between close and open thresholds: stays closed (hysteresis).
        assert_eq!(b.observe(at(t0, 2).await, obs(0.4, 0.7, 50.0)), None);
        // The slow ratio alone trips it.
        let t = b.observe(at(t0, 3).await, obs(0.0, 0.9, 50.0)).unwrap();
        assert_eq!((t.from, t.to), (State::Admit, State::Shed));
        assert!(t.reason.contains("slow ratio"));
        assert_eq!(b.admit_ratio(), 0.0);
        assert_eq!(b.shed_until(), Some(t0 + Duration::from_secs(3 + 10)));

        // Shed holds until the wait is over, whatever the data says.
        assert_eq!(b.observe(at(t0, 12).await, OK), None);
        let t = b.observe(at(t0, 13).await, OK).unwrap();
        assert_eq!((t.from, t.to), (State::Shed, State::Probe));
        assert_eq!(b.admit_ratio(), 0.1);

        // Probe ramps one step per 5 s while healthy: 0.1 -> 0.5 -> 1.0 -> Admit.
        assert_eq!(b.observe(at(t0, 17).await, OK), None);
        assert_eq!(b.admit_ratio(), 0.1);
        assert_eq!(b.observe(at(t0, 18).await, OK), None);
        assert_eq!(b.admit_ratio(), 0.5);
        assert_eq!(b.observe(at(t0, 23).await, OK), None);
        assert_eq!(b.admit_ratio(), 1.0);
        let t = b.observe(at(t0, 28).await, OK).unwrap();
        assert_eq!((t.from, t.to), (State::Probe, State::Admit));
        assert_eq!(b.openings(), 0, "closing resets the statistics");
    }

    #[tokio::test(start_paused = true)]
    async fn probe_failure_reopens_with_a_growing_wait_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Breaker::new(spec(), t0).without_jitter();
        b.observe(t0, obs(0.6, 0.0, 100.0)).unwrap();
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..5 {
            let until = b.shed_until().unwrap();
            waits.push((until - now).as_secs());
            tokio::time::advance(until - Instant::now()).await;
            now = Instant::now();
            assert_eq!(b.observe(now, OK).unwrap().to, State::Probe);
            // In Probe, a ratio above the close threshold (0.2) is a failure.
            tokio::time::advance(Duration::from_secs(1)).await;
            now = Instant::now();
            let t = b.observe(now, obs(0.3, 0.0, 100.0)).unwrap();
            assert_eq!((t.from, t.to), (State::Probe, State::Shed));
        }
        assert_eq!(waits, [10, 20, 40, 60, 60]);
        assert_eq!(b.openings(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_times_out_without_a_healthy_verdict() {
        let t0 = Instant::now();
        let mut b = Breaker::new(spec(), t0).without_jitter();
        b.observe(t0, obs(0.9, 0.0, 100.0)).unwrap();
        let probe_at = at(t0, 10).await;
        assert_eq!(b.observe(probe_at, OK).unwrap().to, State::Probe);
        // Calls keep coming but too few to judge (volume 1 < min_volume 10), or with an
        // unknown ratio, for 30 s: back to Shed.
        assert_eq!(b.observe(at(t0, 25).await, obs(0.0, 0.0, 1.0)), None);
        let unknown_ratio = Observation {
            failure_ratio: None,
            ..obs(0.0, 0.0, 100.0)
        };
        assert_eq!(b.observe(at(t0, 39).await, unknown_ratio), None);
        let t = b.observe(at(t0, 40).await, obs(0.0, 0.0, 1.0)).unwrap();
        assert_eq!(t.to, State::Shed);
        assert!(t.reason.contains("timed out"));
        assert_eq!(b.shed_until(), Some(t0 + Duration::from_secs(40 + 20)));
    }

    /// Traffic stops while probing: no calls is no verdict, not a failure. Probe holds at its
    /// step through an hour of quiet (far past the 30 s probe timeout and the 60 s wait cap),
    /// whether the volume reads 0 or is absent; when calls come back the timeout counts from
    /// there, and healthy calls finish the ramp.
    #[tokio::test(start_paused = true)]
    async fn probe_holds_while_no_calls_come() {
        let t0 = Instant::now();
        let mut b = Breaker::new(spec(), t0).without_jitter();
        b.observe(t0, obs(0.9, 0.0, 100.0)).unwrap();
        assert_eq!(b.observe(at(t0, 10).await, OK).unwrap().to, State::Probe);
        assert_eq!(b.observe(at(t0, 15).await, OK), None);
        assert_eq!(b.admit_ratio(), 0.5, "one step up the ramp");
        let none = Observation::default();
        let zero = Observation {
            failure_ratio: None,
            slow_ratio: None,
            volume: Some(0.0),
        };
        for s in 16..3600 {
            let quiet = if s % 2 == 0 { none } else { zero };
            assert_eq!(b.observe(at(t0, s).await, quiet), None, "at {s} s");
        }
        assert_eq!((b.state(), b.admit_ratio()), (State::Probe, 0.5));
        assert_eq!(b.openings(), 1);
        // Calls come back, too few to judge: the timeout counts from the last quiet second
        // (3599 s), so 29 s later it still probes and 30 s later it sheds.
        assert_eq!(b.observe(at(t0, 3628).await, obs(0.0, 0.0, 1.0)), None);
        let t = b.observe(at(t0, 3629).await, obs(0.0, 0.0, 1.0)).unwrap();
        assert_eq!((t.from, t.to), (State::Probe, State::Shed));
        // And a fresh probe with calls that are healthy closes after the ramp, quiet or not.
        let mut b = Breaker::new(spec(), t0).without_jitter();
        b.observe(at(t0, 3629).await, obs(0.9, 0.0, 100.0)).unwrap();
        assert_eq!(b.observe(at(t0, 3639).await, OK).unwrap().to, State::Probe);
        assert_eq!(b.observe(at(t0, 3700).await, zero), None);
        assert_eq!(b.observe(at(t0, 3701).await, OK), None);
        assert_eq!(b.admit_ratio(), 0.5);
        assert_eq!(b.observe(at(t0, 3706).await, OK), None);
        assert_eq!(b.admit_ratio(), 1.0);
        let t = b.observe(at(t0, 3711).await, OK).unwrap();
        assert_eq!((t.from, t.to), (State::Probe, State::Admit));
    }

    #[tokio::test(start_paused = true)]
    async fn missing_inputs_hold_the_state() {
        let t0 = Instant::now();
        let mut b = Breaker::new(spec(), t0).without_jitter();
        let unknown_ratio = Observation {
            failure_ratio: None,
            slow_ratio: Some(0.0),
            volume: Some(100.0),
        };
        assert_eq!(b.observe(at(t0, 1).await, unknown_ratio), None);
        assert_eq!(b.observe(at(t0, 2).await, Observation::default()), None);
        assert_eq!(b.state(), State::Admit);
        // A tripped ratio still counts even if the other one is unknown.
        let half = Observation {
            failure_ratio: Some(0.7),
            slow_ratio: None,
            volume: Some(100.0),
        };
        assert_eq!(b.observe(at(t0, 3).await, half).unwrap().to, State::Shed);
        // In Probe, an unknown input neither advances the ramp nor closes.
        b.observe(at(t0, 13).await, Observation::default()).unwrap();
        assert_eq!(b.observe(at(t0, 20).await, Observation::default()), None);
        assert_eq!(b.admit_ratio(), 0.1);
    }

    #[tokio::test(start_paused = true)]
    async fn forces_pin_the_state_until_reset() {
        let t0 = Instant::now();
        let mut b = Breaker::new(spec(), t0).without_jitter();
        b.set_force(Some(Force::Open), t0);
        assert_eq!((b.state(), b.admit_ratio()), (State::Shed, 0.0));
        assert_eq!(
            b.observe(at(t0, 100).await, OK),
            None,
            "never Admit while forced open"
        );
        assert_eq!(b.state(), State::Shed);
        b.set_force(Some(Force::Close), Instant::now());
        assert_eq!(b.observe(at(t0, 101).await, obs(1.0, 1.0, 1000.0)), None);
        assert_eq!(b.state(), State::Admit);
        b.reset(Instant::now());
        assert_eq!(b.force(), None);
        assert_eq!(
            b.observe(at(t0, 102).await, obs(1.0, 0.0, 1000.0))
                .unwrap()
                .to,
            State::Shed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reload_keeps_state_when_unchanged_and_resets_when_changed() {
        let t0 = Instant::now();
        let mut old = Breaker::new(spec(), t0).without_jitter();
        old.observe(t0, obs(0.9, 0.0, 100.0)).unwrap();
        old.set_force(None, t0);
        let mut same = Breaker::new(spec(), t0).without_jitter();
        same.inherit(old);
        assert_eq!(same.state(), State::Shed, "same spec: state kept");

        let mut forced = Breaker::new(spec(), t0).without_jitter();
        forced.set_force(Some(Force::Open), t0);
        let mut changed = Breaker::new(
            Spec {
                min_volume: 50.0,
                ..spec()
            },
            t0,
        );
        changed.inherit(forced);
        assert_eq!(changed.state(), State::Shed, "forces survive any reload");
        assert_eq!(changed.force(), Some(Force::Open));

        let mut tripped = Breaker::new(spec(), t0).without_jitter();
        tripped.observe(t0, obs(0.9, 0.0, 100.0)).unwrap();
        let mut changed = Breaker::new(
            Spec {
                min_volume: 50.0,
                ..spec()
            },
            t0,
        );
        changed.inherit(tripped);
        assert_eq!(changed.state(), State::Admit, "changed spec: starts over");
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_its_bounds() {
        let t0 = Instant::now();
        for _ in 0..50 {
            let mut b = Breaker::new(
                Spec {
                    jitter: 0.2,
                    ..spec()
                },
                t0,
            );
            b.observe(t0, obs(0.9, 0.0, 100.0)).unwrap();
            let wait = (b.shed_until().unwrap() - t0).as_secs_f64();
            assert!((8.0..=12.0).contains(&wait), "wait {wait}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_obs() -> impl Strategy<Value = Observation> {
        (
            proptest::option::of(0.0f64..1.0),
            proptest::option::of(0.0f64..1.0),
            proptest::option::of(0.0f64..200.0),
        )
            .prop_map(|(f, s, v)| Observation {
                failure_ratio: f,
                slow_ratio: s,
                volume: v,
            })
    }

    #[derive(Debug, Clone)]
    enum Step {
        Observe(Observation, u64),
        Force(Option<Force>),
        Reset,
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (arb_obs(), 0u64..20_000).prop_map(|(o, ms)| Step::Observe(o, ms)),
            1 => prop_oneof![Just(None), Just(Some(Force::Open)), Just(Some(Force::Close))]
                .prop_map(Step::Force),
            1 => Just(Step::Reset),
        ]
    }

    proptest! {
        /// Whatever happens: never Admit while forced open, never Shed while forced closed,
        /// the admit ratio stays in [0, 1] and matches the state, a transition always changes
        /// the state, and Shed is only entered with a wait no longer than the cap (+ jitter).
        #[test]
        fn invariants_hold_under_any_sequence(steps in proptest::collection::vec(arb_step(), 1..200)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
            rt.block_on(async {
                let spec = Spec::default();
                let cap = spec.wait_max.mul_f64(1.0 + spec.jitter);
                let mut b = Breaker::new(spec, Instant::now());
                for step in steps {
                    match step {
                        Step::Observe(o, ms) => {
                            tokio::time::advance(Duration::from_millis(ms)).await;
                            let now = Instant::now();
                            if let Some(t) = b.observe(now, o) {
                                prop_assert_ne!(t.from, t.to);
                                if t.to == State::Shed {
                                    let wait = b.shed_until().unwrap() - now;
                                    prop_assert!(wait <= cap, "wait {wait:?} over the cap");
                                }
                            }
                        }
                        Step::Force(f) => b.set_force(f, Instant::now()),
                        Step::Reset => b.reset(Instant::now()),
                    }
                    match b.force() {
                        Some(Force::Open) => prop_assert_eq!(b.state(), State::Shed),
                        Some(Force::Close) => prop_assert_eq!(b.state(), State::Admit),
                        None => {}
                    }
                    let r = b.admit_ratio();
                    prop_assert!((0.0..=1.0).contains(&r));
                    match b.state() {
                        State::Admit => prop_assert_eq!(r, 1.0),
                        State::Shed => prop_assert_eq!(r, 0.0),
                        State::Probe => prop_assert!(r > 0.0),
                    }
                }
                Ok(())
            })?;
        }

        /// The open wait grows monotonically with consecutive openings, up to its cap.
        #[test]
        fn wait_grows_monotonically_to_its_cap(
            base_ms in 1u64..60_000,
            multiplier in 1.0f64..5.0,
            max_ms in 1u64..600_000,
        ) {
            let spec = Spec {
                wait_base: Duration::from_millis(base_ms),
                wait_multiplier: multiplier,
                wait_max: Duration::from_millis(max_ms),
                ..Spec::default()
            };
            let b = Breaker::new(spec, Instant::now());
            let mut last = Duration::ZERO;
            for n in 1..80 {
                let w = b.wait_for(n);
                prop_assert!(w >= last, "wait shrank at n={n}");
                prop_assert!(w <= Duration::from_millis(max_ms));
                last = w;
            }
        }
    }
}
