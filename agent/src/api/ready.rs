//! `GET /v1/ready`: a health check for the systems around the host (a Kubernetes readiness
//! probe, a Consul or registrar HTTP check, an HAProxy or nginx health check), answered on
//! both listeners like every read:
//!
//! - `?breaker=a,b`: ready while none of the named breakers sheds (Admit and Probe are ready:
//!   Probe already lets traffic through);
//! - `?signal=x,y&below=0.5`: ready while every named signal is below the level (`below`
//!   defaults to 1: only a signal at full level makes the host unready);
//! - both may be given; neither: ready while the agent answers.
//!
//! 200 when ready, 503 when not, each with `{"ready", "index", "reasons"}`; 404 for a name
//! that is not defined (a misspelt check should not look healthy), 400 for bad parameters.

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;

use super::{error, ApiState};
use crate::control::{breaker::State as BreakerState, Snapshot};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyQuery {
    breaker: Option<String>,
    signal: Option<String>,
    below: Option<f64>,
}

/// Why the host is not ready, or `Err` (status, message) for a bad question.
pub fn judge(snap: &Snapshot, q: &ReadyQuery) -> Result<Vec<String>, (StatusCode, String)> {
    let names = |list: &Option<String>| -> Vec<String> {
        list.as_deref()
            .map(|l| {
                l.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let below = q.below.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&below) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("below={below} is not a level in [0, 1]"),
        ));
    }
    if q.below.is_some() && q.signal.is_none() {
        return Err((StatusCode::BAD_REQUEST, "below= needs signal=".to_string()));
    }
    let mut reasons = Vec::new();
    for name in names(&q.breaker) {
        let b = snap
            .breakers
            .get(&name)
            .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no breaker named {name:?}")))?;
        if b.state == BreakerState::Shed {
            reasons.push(format!("breaker {name} sheds: {}", b.reason));
        }
    }
    for name in names(&q.signal) {
        let s = snap
            .signals
            .get(&name)
            .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no signal named {name:?}")))?;
        if s.level >= below {
            reasons.push(format!(
                "signal {name} at {} >= {below} ({})",
                s.level, s.source
            ));
        }
    }
    Ok(reasons)
}

pub async fn ready(
    State(s): State<ApiState>,
    q: Result<Query<ReadyQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let snap = s.snapshots.borrow().clone();
    match judge(&snap, &q) {
        Ok(reasons) => {
            let ready = reasons.is_empty();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (
                status,
                Json(serde_json::json!({
                    "ready": ready,
                    "index": snap.index,
                    "reasons": reasons,
                })),
            )
                .into_response()
        }
        Err((status, message)) => error(status, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{BreakerView, SignalView};

    fn snap() -> Snapshot {
        let mut s = Snapshot::default();
        let b = |state, reason: &str| BreakerView {
            state,
            admit_ratio: 0.0,
            forced: None,
            openings: 0,
            since_unix_ms: 0,
            reason: reason.into(),
            inputs_unknown: false,
            unknown_reason: None,
        };
        s.breakers
            .insert("db".into(), b(BreakerState::Shed, "failure ratio 0.9"));
        s.breakers
            .insert("cache".into(), b(BreakerState::Probe, "ramp"));
        s.signals.insert(
            "load".into(),
            SignalView {
                level: 0.6,
                source: "cpu_pressure".into(),
                inputs_unknown: false,
                unknown_reason: None,
            },
        );
        s
    }

    fn q(breaker: Option<&str>, signal: Option<&str>, below: Option<f64>) -> ReadyQuery {
        ReadyQuery {
            breaker: breaker.map(Into::into),
            signal: signal.map(Into::into),
            below,
        }
    }

    #[test]
    fn sheds_and_high_signals_make_the_host_unready() {
        let s = snap();
        assert_eq!(judge(&s, &q(None, None, None)), Ok(vec![]));
        assert_eq!(judge(&s, &q(Some("cache"), None, None)), Ok(vec![]));
        assert_eq!(
            judge(&s, &q(Some("cache,db"), None, None)),
            Ok(vec!["breaker db sheds: failure ratio 0.9".to_string()])
        );
        assert_eq!(judge(&s, &q(None, Some("load"), None)), Ok(vec![]));
        assert_eq!(
            judge(&s, &q(None, Some("load"), Some(0.5))),
            Ok(vec!["signal load at 0.6 >= 0.5 (cpu_pressure)".to_string()])
        );
        assert_eq!(judge(&s, &q(None, Some("load"), Some(0.7))), Ok(vec![]));
        assert_eq!(
            judge(&s, &q(Some("nope"), None, None)).unwrap_err().0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            judge(&s, &q(None, Some("load"), Some(2.0))).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            judge(&s, &q(Some("db"), None, Some(0.5))).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }
}
