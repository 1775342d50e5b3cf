//! The alert state machine of one alerting rule, after Prometheus: each label set the
//! expression returns becomes a *pending* alert, *firing* once it has been returned for
//! `for`; when it is no longer returned a pending alert is dropped and a firing one keeps
//! firing for `keep_firing_for` and then becomes *resolved* (kept 15 minutes so the
//! resolution is re-sent to Alertmanager, then forgotten).
//!
//! Missing or stale input is UNKNOWN ([`Outcome::Unknown`]): nothing changes state, neither
//! new alerts nor resolutions, and timers do not advance past what they were.
//! Time is passed in (ms since the epoch): nothing here reads a clock.

use std::collections::{BTreeMap, HashMap};

use crate::rules::eval::Sample;
use crate::store::Labels;

/// How long a resolved alert is kept to re-send its resolution.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;
/// Active alerts one rule may hold; label sets beyond it are ignored (and counted).
pub const MAX_ALERTS_PER_RULE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum State {
    Pending,
    Firing,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "inactive",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    /// Labels including `alertname`.
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub state: State,
    pub value: f64,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    keep_firing_since: Option<i64>,
    /// When this alert was last handed to the notifier (engine bookkeeping).
    pub last_sent: Option<i64>,
}

/// What an evaluation of the rule's expression gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The samples the expression returned (empty: the condition does not hold).
    Known(Vec<Sample>),
    /// Missing or stale input, or an evaluation error: hold every state.
    Unknown,
}

/// The definition parts the state machine needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSpec {
    pub name: String,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct AlertingRule {
    pub spec: AlertSpec,
    active: HashMap<Labels, Alert>,
}

impl AlertingRule {
    pub fn new(spec: AlertSpec) -> Self {
        Self {
            spec,
            active: HashMap::new(),
        }
    }

    /// Alerts held now (pending, firing, resolved-and-kept), in label order.
    pub fn alerts(&self) -> Vec<&Alert> {
        let mut v: Vec<&Alert> = self.active.values().collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }

    pub fn alerts_mut(&mut self) -> impl Iterator<Item = &mut Alert> {
        self.active.values_mut()
    }

    /// Alerts held now, in any state.
    pub fn held(&self) -> usize {
        self.active.len()
    }

    /// Puts back alerts saved before a restart (pending and firing ones; they are re-sent),
    /// as many as `room` (alerts the engine may still hold) and the rule's own cap allow.
    pub fn restore(&mut self, alerts: Vec<Alert>, room: &mut usize) {
        for mut a in alerts {
            if a.state == State::Resolved || self.active.len() >= MAX_ALERTS_PER_RULE || *room == 0
            {
                continue;
            }
            *room -= 1;
            a.last_sent = None;
            a.labels.insert("alertname".into(), self.spec.name.clone());
            self.active.insert(a.labels.clone(), a);
        }
    }

    pub fn count(&self, state: State) -> usize {
        self.active.values().filter(|a| a.state == state).count()
    }

    /// Applies one evaluation at `t`. A new label set takes one of `room` (alerts the engine
    /// may still hold; an alert that goes away gives its place back); without room, or once
    /// the rule holds [`MAX_ALERTS_PER_RULE`], it is refused. Returns the label sets refused.
    pub fn update(&mut self, t: i64, outcome: Outcome, room: &mut usize) -> u64 {
        let samples = match outcome {
            Outcome::Unknown => return 0,
            Outcome::Known(s) => s,
        };
        let mut refused = 0;
        // Alerts resolved for the whole retention give their places back first, so new
        // label sets can take them in this same evaluation.
        let before = self.active.len();
        self.active.retain(|_, a| {
            a.state != State::Resolved
                || a.resolved_at.is_some_and(|r| t - r < RESOLVED_RETENTION_MS)
        });
        *room = room.saturating_add(before - self.active.len());
        let mut seen = std::collections::HashSet::new();
        for s in samples {
            let mut labels = s.labels;
            labels.remove("__name__");
            for (k, v) in &self.spec.labels {
                labels.insert(k.clone(), expand(v, &labels, s.value));
            }
            labels.insert("alertname".into(), self.spec.name.clone());
            let annotations: BTreeMap<String, String> = self
                .spec
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), expand(v, &labels, s.value)))
                .collect();
            seen.insert(labels.clone());
            let full = self.active.len() >= MAX_ALERTS_PER_RULE || *room == 0;
            match self.active.get_mut(&labels) {
                Some(a) if a.state != State::Resolved => {
                    a.value = s.value;
                    a.annotations = annotations;
                    a.keep_firing_since = None;
                    continue;
                }
                Some(_) => {}
                None if full => {
                    refused += 1;
                    continue;
                }
                None => *room -= 1,
            }
            self.active.insert(
                labels.clone(),
                Alert {
                    labels,
                    annotations,
                    state: State::Pending,
                    value: s.value,
                    active_at: t,
                    fired_at: None,
                    resolved_at: None,
                    keep_firing_since: None,
                    last_sent: None,
                },
            );
        }
        let keep = self.spec.keep_firing_for_ms;
        let before = self.active.len();
        self.active.retain(|labels, a| {
            if seen.contains(labels) {
                return true;
            }
            match a.state {
                State::Pending => false,
                State::Firing => {
                    if keep > 0 {
                        let since = *a.keep_firing_since.get_or_insert(t);
                        if t - since < keep {
                            return true;
                        }
                    }
                    a.state = State::Resolved;
                    a.resolved_at = Some(t);
                    true
                }
                // Expired ones went at the start.
                State::Resolved => true,
            }
        });
        *room = room.saturating_add(before - self.active.len());
        for a in self.active.values_mut() {
            if a.state == State::Pending && t - a.active_at >= self.spec.for_ms {
                a.state = State::Firing;
                a.fired_at = Some(t);
            }
        }
        refused
    }
}

/// Expands `{{ $value }}`, `{{ $labels.NAME }}` (and `{{ $value | humanize }}`, which prints
/// at most 4 significant digits) in a label or annotation template; anything else between
/// braces is left as written.
pub fn expand(template: &str, labels: &Labels, value: f64) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let inner = after[..close].trim();
        let (head, pipe) = match inner.split_once('|') {
            Some((h, p)) => (h.trim(), Some(p.trim())),
            None => (inner, None),
        };
        let expanded = if head == "$value" {
            Some(match pipe {
                Some("humanize") => format!("{}", humanize(value)),
                _ => format!("{value}"),
            })
        } else {
            head.strip_prefix("$labels.")
                .map(|name| labels.get(name).cloned().unwrap_or_default())
        };
        match expanded {
            Some(s) => out.push_str(&s),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

fn humanize(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let digits = 4 - 1 - v.abs().log10().floor() as i32;
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    /// Room for any number of alerts (the engine's cap is tested in `engine`).
    fn unlimited() -> usize {
        usize::MAX
    }
    use super::*;

    fn spec(for_ms: i64, keep: i64) -> AlertSpec {
        AlertSpec {
            name: "A".into(),
            for_ms,
            keep_firing_for_ms: keep,
            labels: BTreeMap::from([("severity".into(), "page".into())]),
            annotations: BTreeMap::from([(
                "summary".into(),
                "{{ $labels.svc }} at {{ $value | humanize }}".into(),
            )]),
        }
    }

    fn hit(v: f64) -> Outcome {
        let mut labels = Labels::new();
        labels.insert("__name__".into(), "x".into());
        labels.insert("svc".into(), "db".into());
        Outcome::Known(vec![Sample { labels, value: v }])
    }

    fn state(r: &AlertingRule) -> Option<State> {
        r.alerts().first().map(|a| a.state)
    }

    #[test]
    fn for_makes_pending_then_firing_then_resolved() {
        let mut r = AlertingRule::new(spec(60_000, 0));
        r.update(0, hit(1.0), &mut unlimited());
        assert_eq!(state(&r), Some(State::Pending));
        r.update(59_999, hit(1.0), &mut unlimited());
        assert_eq!(state(&r), Some(State::Pending));
        r.update(60_000, hit(2.5), &mut unlimited());
        assert_eq!(state(&r), Some(State::Firing));
        let a = r.alerts()[0];
        assert_eq!(a.active_at, 0);
        assert_eq!(a.fired_at, Some(60_000));
        assert_eq!(a.labels["alertname"], "A");
        assert_eq!(a.labels["severity"], "page");
        assert!(!a.labels.contains_key("__name__"));
        assert_eq!(a.annotations["summary"], "db at 2.5");
        r.update(61_000, Outcome::Known(vec![]), &mut unlimited());
        assert_eq!(state(&r), Some(State::Resolved));
        assert_eq!(r.alerts()[0].resolved_at, Some(61_000));
        // kept for 15 minutes, then forgotten
        r.update(
            61_000 + RESOLVED_RETENTION_MS - 1,
            Outcome::Known(vec![]),
            &mut unlimited(),
        );
        assert_eq!(state(&r), Some(State::Resolved));
        r.update(
            61_000 + RESOLVED_RETENTION_MS,
            Outcome::Known(vec![]),
            &mut unlimited(),
        );
        assert_eq!(state(&r), None);
    }

    #[test]
    fn pending_that_goes_away_is_dropped_and_restarts_its_timer() {
        let mut r = AlertingRule::new(spec(60_000, 0));
        r.update(0, hit(1.0), &mut unlimited());
        r.update(30_000, Outcome::Known(vec![]), &mut unlimited());
        assert_eq!(state(&r), None);
        r.update(40_000, hit(1.0), &mut unlimited());
        r.update(99_999, hit(1.0), &mut unlimited());
        assert_eq!(state(&r), Some(State::Pending));
        r.update(100_000, hit(1.0), &mut unlimited());
        assert_eq!(state(&r), Some(State::Firing));
    }

    #[test]
    fn keep_firing_for_holds_and_is_reset_by_a_return() {
        let mut r = AlertingRule::new(spec(0, 30_000));
        r.update(0, hit(1.0), &mut unlimited());
        assert_eq!(state(&r), Some(State::Firing), "for: 0 fires at once");
        r.update(10_000, Outcome::Known(vec![]), &mut unlimited());
        r.update(39_999, Outcome::Known(vec![]), &mut unlimited());
        assert_eq!(state(&r), Some(State::Firing));
        r.update(40_000, hit(1.0), &mut unlimited()); // back: the keep timer restarts
        r.update(50_000, Outcome::Known(vec![]), &mut unlimited());
        r.update(79_999, Outcome::Known(vec![]), &mut unlimited());
        assert_eq!(state(&r), Some(State::Firing));
        r.update(80_000, Outcome::Known(vec![]), &mut unlimited());
        assert_eq!(state(&r), Some(State::Resolved));
        assert_eq!(r.alerts()[0].resolved_at, Some(80_000));
    }

    #[test]
    fn unknown_input_holds_every_state() {
        // firing stays firing
        let mut r = AlertingRule::new(spec(0, 0));
        r.update(0, hit(1.0), &mut unlimited());
        for t in 1..100 {
            r.update(t * 1000, Outcome::Unknown, &mut unlimited());
        }
        assert_eq!(state(&r), Some(State::Firing));
        // pending stays pending and does not fire on unknown ticks alone
        let mut r = AlertingRule::new(spec(60_000, 0));
        r.update(0, hit(1.0), &mut unlimited());
        r.update(120_000, Outcome::Unknown, &mut unlimited());
        assert_eq!(state(&r), Some(State::Pending));
        // nothing stays nothing
        let mut r = AlertingRule::new(spec(0, 0));
        r.update(0, Outcome::Unknown, &mut unlimited());
        assert_eq!(state(&r), None);
    }

    #[test]
    fn templates() {
        let mut l = Labels::new();
        l.insert("a".into(), "x".into());
        assert_eq!(expand("{{$labels.a}}-{{ $labels.b }}", &l, 1.0), "x-");
        assert_eq!(expand("v={{ $value }}", &l, 0.25), "v=0.25");
        assert_eq!(expand("{{ $value | humanize }}", &l, 123456.0), "123500");
        assert_eq!(
            expand("{{ .Other }} {{ open", &l, 1.0),
            "{{ .Other }} {{ open"
        );
    }
}
