//! PromQL evaluation: the subset that `rules::spec::promql` accepts, evaluated over the
//! [`Store`] at one instant.
//!
//! Supported: number literals, vector selectors with label matchers and `offset`, range
//! selectors as function arguments, the functions of [`FUNCS`](crate::rules::spec::promql::FUNCS) (`rate`, `increase`, `delta`,
//! `irate`, `idelta`, `deriv`, `predict_linear`, `changes`, `resets`, the `*_over_time` family
//! with `stddev`, `stdvar`, `quantile`, `last` and `present`, `absent`, `absent_over_time`,
//! `histogram_quantile`, `abs`, `sgn`, `clamp`, `clamp_min`, `clamp_max`, `label_replace`,
//! `timestamp`, `scalar`, `vector`, `time`); the aggregations `sum`, `avg`, `max`, `min`,
//! `count`, `topk`, `bottomk`, `quantile` with `by`/`without`; arithmetic
//! (`+ - * / % ^`), comparisons (with and without `bool`), `and`/`or`/`unless`, with
//! one-to-one vector matching (`on`, `ignoring`). Anything else is a validation error at load
//! time, never at evaluation (`label_replace`'s regex and label name included).
//!
//! Semantics follow Prometheus: `rate`/`increase` extrapolate like Prometheus'
//! `extrapolatedRate` (counter resets, extrapolation to the range ends by at most half a
//! sample interval, not below zero), instant selectors look back 5 minutes and honour stale
//! markers, `histogram_quantile` interpolates linearly inside the bucket like
//! `bucketQuantile`; sums are Kahan-Neumaier compensated and `deriv`/`predict_linear` use
//! Prometheus' regression, so values agree exactly (tests/promql_conformance.rs runs the same
//! tests through promtool). Differences: no `@`, subqueries, `group_left/right`, native histograms or
//! string results; a range is `(t - range, t]` over samples that may have been downsampled
//! to one a minute beyond the store's raw window (see `store`), which makes `rate` over long
//! windows use fewer, wider-spaced points (same extrapolation rules). Expressions nest at most
//! [`MAX_DEPTH`] levels; ranges and offsets of any length are taken, their arithmetic saturates.
//!
//! Missing input: an evaluation records whether any selector selected nothing
//! ([`Evaluated::missing`]); the rule engine treats an empty result with missing input as
//! UNKNOWN and holds the previous state.

use std::collections::HashMap;

use promql_parser::{
    label::Matcher,
    parser::{
        token::{self, TokenType},
        AggregateExpr, BinaryExpr, Call, Expr, LabelModifier,
    },
};

use crate::rules::spec::promql::{
    anchored_regex, matchers, millis, offset_ms, string_arg, ExprError, MAX_DEPTH,
};
use crate::store::{Labels, Store};

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// The result of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    pub value: Value,
    /// Some selector selected no series.
    pub missing: bool,
}

/// Evaluates `expr` over `store` at `t` (ms since the epoch).
pub fn eval(expr: &Expr, store: &Store, t: i64) -> Result<Evaluated, ExprError> {
    let mut ev = Evaluator {
        store,
        t,
        missing: false,
        depth: 0,
    };
    let value = ev.eval(expr)?;
    Ok(Evaluated {
        value,
        missing: ev.missing,
    })
}

struct Evaluator<'a> {
    store: &'a Store,
    t: i64,
    missing: bool,
    /// Depth of the node being evaluated (the root is 0): at most [`MAX_DEPTH`].
    depth: usize,
}

/// A function of one series' points in a range and the range's start and end (ms).
type RangeFn<'f> = &'f dyn Fn(&[(i64, f64)], i64, i64) -> Option<f64>;

fn drop_name(mut l: Labels) -> Labels {
    l.remove("__name__");
    l
}

impl Evaluator<'_> {
    /// Evaluates one node. [`parse`] refuses trees deeper than [`MAX_DEPTH`]; the evaluator
    /// stops there too, whatever tree it is given, so its recursion is bounded.
    fn eval(&mut self, expr: &Expr) -> Result<Value, ExprError> {
        if self.depth > MAX_DEPTH {
            return Err(ExprError::TooDeep);
        }
        self.depth += 1;
        let value = self.eval_node(expr);
        self.depth -= 1;
        value
    }

    fn eval_node(&mut self, expr: &Expr) -> Result<Value, ExprError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => Ok(match self.eval(&u.expr)? {
                Value::Scalar(v) => Value::Scalar(-v),
                Value::Vector(v) => Value::Vector(
                    v.into_iter()
                        .map(|s| Sample {
                            labels: drop_name(s.labels),
                            value: -s.value,
                        })
                        .collect(),
                ),
            }),
            Expr::VectorSelector(vs) => {
                let got = self
                    .store
                    .instant(&matchers(vs), self.t.saturating_sub(offset_ms(vs)));
                if got.is_empty() {
                    self.missing = true;
                }
                Ok(Value::Vector(
                    got.into_iter()
                        .map(|(labels, value)| Sample { labels, value })
                        .collect(),
                ))
            }
            Expr::Aggregate(a) => self.aggregate(a),
            Expr::Binary(b) => self.binary(b),
            Expr::Call(c) => self.call(c),
            other => Err(ExprError::Unsupported(format!("{other}"))),
        }
    }

    fn vector(&mut self, expr: &Expr) -> Result<Vec<Sample>, ExprError> {
        match self.eval(expr)? {
            Value::Vector(v) => Ok(v),
            Value::Scalar(_) => Err(ExprError::Eval(format!("{expr}: expected a vector"))),
        }
    }

    fn scalar(&mut self, expr: &Expr) -> Result<f64, ExprError> {
        match self.eval(expr)? {
            Value::Scalar(v) => Ok(v),
            Value::Vector(_) => Err(ExprError::Eval(format!("{expr}: expected a scalar"))),
        }
    }

    /// The matchers and the `(start, end]` of a range selector.
    fn window(&self, expr: &Expr) -> Result<(Vec<Matcher>, i64, i64), ExprError> {
        let Expr::MatrixSelector(ms) = expr else {
            return Err(ExprError::Eval(format!(
                "{expr}: expected a range selector"
            )));
        };
        let end = self.t.saturating_sub(offset_ms(&ms.vs));
        let start = end.saturating_sub(millis(ms.range));
        Ok((matchers(&ms.vs), start, end))
    }

    /// `f` over each series of the range selector `arg`, dropping `__name__` unless
    /// `keep_name`; series for which `f` gives nothing are left out. The store hands over
    /// one series' points at a time ([`Store::range_each`]).
    fn over_matrix(&mut self, arg: &Expr, keep_name: bool, f: RangeFn) -> Result<Value, ExprError> {
        let (m, start, end) = self.window(arg)?;
        let (mut out, mut any) = (Vec::new(), false);
        self.store.range_each(&m, start, end, |labels, pts| {
            any = true;
            if let Some(value) = f(pts, start, end) {
                let labels = labels.clone();
                out.push(Sample {
                    labels: if keep_name { labels } else { drop_name(labels) },
                    value,
                });
            }
        });
        if !any {
            self.missing = true;
        }
        Ok(Value::Vector(out))
    }

    /// `f` applied to every sample's value, `__name__` dropped.
    fn map_values(&mut self, arg: &Expr, f: &dyn Fn(f64) -> f64) -> Result<Value, ExprError> {
        let v = self.vector(arg)?;
        Ok(Value::Vector(
            v.into_iter()
                .map(|s| Sample {
                    labels: drop_name(s.labels),
                    value: f(s.value),
                })
                .collect(),
        ))
    }

    fn call(&mut self, c: &Call) -> Result<Value, ExprError> {
        let args = &c.args.args;
        let t = self.t;
        match c.func.name {
            "rate" => self.over_matrix(&args[0], false, &|p, s, e| {
                extrapolated(p, s, e, true, true)
            }),
            "increase" => self.over_matrix(&args[0], false, &|p, s, e| {
                extrapolated(p, s, e, true, false)
            }),
            "delta" => self.over_matrix(&args[0], false, &|p, s, e| {
                extrapolated(p, s, e, false, false)
            }),
            "irate" => self.over_matrix(&args[0], false, &|p, _, _| instant_value(p, true)),
            "idelta" => self.over_matrix(&args[0], false, &|p, _, _| instant_value(p, false)),
            "deriv" => self.over_matrix(&args[0], false, &|p, _, _| {
                (p.len() >= 2).then(|| linear_regression(p, p[0].0).0)
            }),
            "predict_linear" => {
                let ahead = self.scalar(&args[1])?;
                self.over_matrix(&args[0], false, &|p, _, _| {
                    (p.len() >= 2).then(|| {
                        let (slope, intercept) = linear_regression(p, t);
                        slope * ahead + intercept
                    })
                })
            }
            "changes" => self.over_matrix(&args[0], false, &|p, _, _| {
                Some(
                    p.windows(2)
                        .filter(|w| w[1].1 != w[0].1 && !(w[1].1.is_nan() && w[0].1.is_nan()))
                        .count() as f64,
                )
            }),
            "resets" => self.over_matrix(&args[0], false, &|p, _, _| {
                Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64)
            }),
            "avg_over_time" => self.over_matrix(&args[0], false, &|p, _, _| Some(mean(p))),
            "sum_over_time" => self.over_matrix(&args[0], false, &|p, _, _| {
                let (sum, c) = p
                    .iter()
                    .fold((0.0, 0.0), |(sum, c), x| kahan_inc(x.1, sum, c));
                Some(if sum.is_infinite() { sum } else { sum + c })
            }),
            "count_over_time" => self.over_matrix(&args[0], false, &|p, _, _| Some(p.len() as f64)),
            "max_over_time" => self.over_matrix(&args[0], false, &|p, _, _| {
                p.iter()
                    .map(|x| x.1)
                    .reduce(|m, v| if v > m || m.is_nan() { v } else { m })
            }),
            "min_over_time" => self.over_matrix(&args[0], false, &|p, _, _| {
                p.iter()
                    .map(|x| x.1)
                    .reduce(|m, v| if v < m || m.is_nan() { v } else { m })
            }),
            "last_over_time" => self.over_matrix(&args[0], true, &|p, _, _| p.last().map(|x| x.1)),
            "present_over_time" => self.over_matrix(&args[0], false, &|_, _, _| Some(1.0)),
            "stddev_over_time" => {
                self.over_matrix(&args[0], false, &|p, _, _| Some(variance(p).sqrt()))
            }
            "stdvar_over_time" => self.over_matrix(&args[0], false, &|p, _, _| Some(variance(p))),
            "quantile_over_time" => {
                let q = self.scalar(&args[0])?;
                self.over_matrix(&args[1], false, &|p, _, _| {
                    Some(quantile(q, p.iter().map(|x| x.1).collect()))
                })
            }
            "absent" => {
                let v = self.vector(&args[0])?;
                Ok(Value::Vector(if v.is_empty() {
                    vec![Sample {
                        labels: absent_labels(&args[0]),
                        value: 1.0,
                    }]
                } else {
                    Vec::new()
                }))
            }
            "absent_over_time" => {
                let (m, start, end) = self.window(&args[0])?;
                let mut none = true;
                self.store.range_each(&m, start, end, |_, _| none = false);
                if none {
                    self.missing = true;
                }
                Ok(Value::Vector(if none {
                    vec![Sample {
                        labels: absent_labels(&args[0]),
                        value: 1.0,
                    }]
                } else {
                    Vec::new()
                }))
            }
            "histogram_quantile" => {
                let q = self.scalar(&args[0])?;
                let v = self.vector(&args[1])?;
                Ok(Value::Vector(histogram_quantile(q, v)))
            }
            "abs" => self.map_values(&args[0], &f64::abs),
            "sgn" => self.map_values(&args[0], &|x| {
                if x < 0.0 {
                    -1.0
                } else if x > 0.0 {
                    1.0
                } else {
                    x
                }
            }),
            "clamp_min" => {
                let min = self.scalar(&args[1])?;
                self.map_values(&args[0], &|x| x.max(min))
            }
            "clamp_max" => {
                let max = self.scalar(&args[1])?;
                self.map_values(&args[0], &|x| x.min(max))
            }
            "clamp" => {
                let min = self.scalar(&args[1])?;
                let max = self.scalar(&args[2])?;
                if max < min {
                    // Like Prometheus: the vector is still evaluated, the result is empty.
                    self.vector(&args[0])?;
                    return Ok(Value::Vector(Vec::new()));
                }
                // Go's math.Max/Min: NaN wins.
                self.map_values(&args[0], &move |x| {
                    if x.is_nan() {
                        x
                    } else {
                        x.min(max).max(min)
                    }
                })
            }
            "label_replace" => {
                let v = self.vector(&args[0])?;
                let text = |i: usize| string_arg(&args[i]).unwrap_or_default();
                let (dst, repl, src) = (text(1), text(2), text(3));
                let re = anchored_regex(&text(4)).map_err(|e| ExprError::Eval(e.to_string()))?;
                let mut out = Vec::with_capacity(v.len());
                let mut seen = std::collections::HashSet::new();
                for mut s in v {
                    let value = s.labels.get(&src).cloned().unwrap_or_default();
                    if let Some(caps) = re.captures(&value) {
                        let mut res = String::new();
                        caps.expand(&repl, &mut res);
                        s.labels.remove(&dst);
                        if !res.is_empty() {
                            s.labels.insert(dst.clone(), res);
                        }
                    }
                    if !seen.insert(s.labels.clone()) {
                        return Err(ExprError::Eval(
                            "vector cannot contain metrics with the same labelset".into(),
                        ));
                    }
                    out.push(s);
                }
                Ok(Value::Vector(out))
            }
            "timestamp" => {
                let mut arg: &Expr = &args[0];
                while let Expr::Paren(p) = arg {
                    arg = &p.expr;
                }
                if let Expr::VectorSelector(vs) = arg {
                    // The samples' own times, not the evaluation's.
                    let got = self
                        .store
                        .instant_with_times(&matchers(vs), self.t.saturating_sub(offset_ms(vs)));
                    if got.is_empty() {
                        self.missing = true;
                    }
                    return Ok(Value::Vector(
                        got.into_iter()
                            .map(|(labels, ts, _)| Sample {
                                labels: drop_name(labels),
                                value: ts as f64 / 1000.0,
                            })
                            .collect(),
                    ));
                }
                self.map_values(arg, &|_| t as f64 / 1000.0)
            }
            "scalar" => {
                let v = self.vector(&args[0])?;
                Ok(Value::Scalar(if v.len() == 1 {
                    v[0].value
                } else {
                    f64::NAN
                }))
            }
            "vector" => {
                let s = self.scalar(&args[0])?;
                Ok(Value::Vector(vec![Sample {
                    labels: Labels::new(),
                    value: s,
                }]))
            }
            "time" => Ok(Value::Scalar(self.t as f64 / 1000.0)),
            other => Err(ExprError::Unsupported(format!("function {other}"))),
        }
    }

    fn aggregate(&mut self, a: &AggregateExpr) -> Result<Value, ExprError> {
        let op = a.op.id();
        let param = match &a.param {
            Some(p) if matches!(op, token::T_TOPK | token::T_BOTTOMK | token::T_QUANTILE) => {
                Some(self.scalar(p)?)
            }
            _ => None,
        };
        let v = self.vector(&a.expr)?;
        if let Some(p) = param {
            return ranked(a, op, p, v);
        }
        // group key -> (labels, sum, count, min, max)
        let mut groups: HashMap<Labels, (f64, usize, f64, f64)> = HashMap::new();
        let mut order: Vec<Labels> = Vec::new();
        for s in v {
            let key: Labels = match &a.modifier {
                Some(LabelModifier::Include(ls)) => s
                    .labels
                    .iter()
                    .filter(|(k, _)| ls.labels.contains(k) && *k != "__name__")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                Some(LabelModifier::Exclude(ls)) => s
                    .labels
                    .iter()
                    .filter(|(k, _)| !ls.labels.contains(k) && *k != "__name__")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                None => Labels::new(),
            };
            let e = groups.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                (0.0, 0, f64::INFINITY, f64::NEG_INFINITY)
            });
            e.0 += s.value;
            e.1 += 1;
            e.2 = if s.value.is_nan() {
                e.2
            } else {
                e.2.min(s.value)
            };
            e.3 = if s.value.is_nan() {
                e.3
            } else {
                e.3.max(s.value)
            };
        }
        let out = order
            .into_iter()
            .map(|labels| {
                let (sum, n, min, max) = groups[&labels];
                let value = match op {
                    token::T_SUM => sum,
                    token::T_AVG => sum / n as f64,
                    token::T_COUNT => n as f64,
                    token::T_MIN if min.is_finite() || min == f64::NEG_INFINITY => min,
                    token::T_MAX if max.is_finite() || max == f64::INFINITY => max,
                    _ => f64::NAN,
                };
                Sample { labels, value }
            })
            .collect();
        Ok(Value::Vector(out))
    }

    fn binary(&mut self, b: &BinaryExpr) -> Result<Value, ExprError> {
        let op = b.op;
        let lhs = self.eval(&b.lhs)?;
        let rhs = self.eval(&b.rhs)?;
        let return_bool = b.return_bool();
        let is_cmp = op.is_comparison_operator();
        match (lhs, rhs) {
            (Value::Scalar(x), Value::Scalar(y)) => {
                Ok(Value::Scalar(arith(op, x, y).ok_or_else(|| {
                    ExprError::Eval(format!("operator {op} on scalars"))
                })?))
            }
            (Value::Vector(v), Value::Scalar(y)) => Ok(Value::Vector(vector_scalar(
                op,
                v,
                y,
                false,
                is_cmp,
                return_bool,
            )?)),
            (Value::Scalar(x), Value::Vector(v)) => Ok(Value::Vector(vector_scalar(
                op,
                v,
                x,
                true,
                is_cmp,
                return_bool,
            )?)),
            (Value::Vector(l), Value::Vector(r)) => Ok(Value::Vector(vector_vector(b, l, r)?)),
        }
    }
}

/// The key of `labels`' group under an aggregation's `by`/`without`.
fn group_key(a: &AggregateExpr, labels: &Labels) -> Labels {
    match &a.modifier {
        Some(LabelModifier::Include(ls)) => labels
            .iter()
            .filter(|(k, _)| ls.labels.contains(k) && *k != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(ls)) => labels
            .iter()
            .filter(|(k, _)| !ls.labels.contains(k) && *k != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => Labels::new(),
    }
}

/// `topk`, `bottomk` (the samples themselves, labels kept, NaN ranked below every number as
/// in Prometheus) and `quantile` (one sample per group) with their parameter `p`.
fn ranked(
    a: &AggregateExpr,
    op: token::TokenId,
    p: f64,
    v: Vec<Sample>,
) -> Result<Value, ExprError> {
    let mut groups: HashMap<Labels, Vec<Sample>> = HashMap::new();
    let mut order = Vec::new();
    for s in v {
        let key = group_key(a, &s.labels);
        groups
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(s);
    }
    let mut out = Vec::new();
    if op == token::T_QUANTILE {
        for key in order {
            let values = groups[&key].iter().map(|s| s.value).collect();
            out.push(Sample {
                labels: key,
                value: quantile(p, values),
            });
        }
        return Ok(Value::Vector(out));
    }
    if !(p >= i64::MIN as f64 && p <= i64::MAX as f64) {
        return Err(ExprError::Eval(format!("Scalar value {p} overflows int64")));
    }
    let k = p as i64;
    if k < 1 {
        return Ok(Value::Vector(out));
    }
    let k = usize::try_from(k).unwrap_or(usize::MAX);
    for key in order {
        let mut members = groups.remove(&key).unwrap_or_default();
        // Highest first for topk, lowest first for bottomk; NaN last in both.
        members.sort_by(|x, y| match (x.value.is_nan(), y.value.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ if op == token::T_TOPK => y.value.total_cmp(&x.value),
            _ => x.value.total_cmp(&y.value),
        });
        members.truncate(k);
        out.extend(members);
    }
    Ok(Value::Vector(out))
}

/// Prometheus' `quantile`: linear interpolation between the closest ranks (`q * (n - 1)`);
/// NaN for no values, -Inf for q < 0 and +Inf for q > 1. NaN values sort first.
pub fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|x, y| match (x.is_nan(), y.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => x.total_cmp(y),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Kahan-Neumaier compensated addition: `(sum + inc, compensation)`, as Prometheus sums.
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// `avg_over_time`: an incremental, compensated mean that survives infinities like
/// Prometheus'.
fn mean(p: &[(i64, f64)]) -> f64 {
    let (mut mean, mut c, mut count) = (0.0f64, 0.0f64, 0.0f64);
    for &(_, v) in p {
        count += 1.0;
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_inc(v / count - mean / count, mean, c);
    }
    if mean.is_infinite() {
        mean
    } else {
        mean + c
    }
}

/// The population variance of the values (Welford's method, compensated), as
/// `stdvar_over_time`.
fn variance(p: &[(i64, f64)]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for &(_, v) in p {
        count += 1.0;
        let delta = v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Least-squares slope (per second) and intercept at `at` (ms) of the points, like
/// Prometheus' `linearRegression`: constant values give slope 0 (NaN when infinite).
pub fn linear_regression(p: &[(i64, f64)], at: i64) -> (f64, f64) {
    let init = p[0].1;
    let constant = p.iter().all(|x| x.1 == init);
    if constant {
        return if init.is_infinite() {
            (f64::NAN, f64::NAN)
        } else {
            (0.0, init)
        };
    }
    let (mut n, mut sx, mut cx, mut sy, mut cy) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0f64, 0.0, 0.0, 0.0);
    for &(ts, v) in p {
        n += 1.0;
        let x = (ts - at) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// `irate` (`is_rate`) and `idelta`: from the last two points; a fall is a counter reset
/// for `irate`.
fn instant_value(p: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (last_t, last) = p[p.len() - 1];
    let (prev_t, prev) = p[p.len() - 2];
    let mut v = if is_rate && last < prev {
        last
    } else {
        last - prev
    };
    let dt = last_t - prev_t;
    if dt == 0 {
        return None;
    }
    if is_rate {
        v /= dt as f64 / 1000.0;
    }
    Some(v)
}

/// The labels of `absent(...)`'s sample: the selector's `=` matchers (a label matched twice,
/// or by another operator, is left out), as Prometheus does; none for other expressions.
fn absent_labels(arg: &Expr) -> Labels {
    let ms = match arg {
        Expr::VectorSelector(vs) => &vs.matchers.matchers,
        Expr::MatrixSelector(ms) => &ms.vs.matchers.matchers,
        _ => return Labels::new(),
    };
    let mut out = Labels::new();
    let mut has = std::collections::HashSet::new();
    for m in ms {
        if m.name == "__name__" {
            continue;
        }
        if matches!(m.op, promql_parser::label::MatchOp::Equal) && has.insert(m.name.clone()) {
            out.insert(m.name.clone(), m.value.clone());
        } else {
            out.remove(&m.name);
        }
    }
    out
}

/// `x op y` for arithmetic and comparison operators (comparisons give 1 or 0).
fn arith(op: TokenType, x: f64, y: f64) -> Option<f64> {
    let b = |c: bool| if c { 1.0 } else { 0.0 };
    Some(match op.id() {
        token::T_ADD => x + y,
        token::T_SUB => x - y,
        token::T_MUL => x * y,
        token::T_DIV => x / y,
        token::T_MOD => x % y,
        token::T_POW => x.powf(y),
        token::T_EQLC => b(x == y),
        token::T_NEQ => b(x != y),
        token::T_GTR => b(x > y),
        token::T_LSS => b(x < y),
        token::T_GTE => b(x >= y),
        token::T_LTE => b(x <= y),
        _ => return None,
    })
}

fn vector_scalar(
    op: TokenType,
    v: Vec<Sample>,
    s: f64,
    scalar_left: bool,
    is_cmp: bool,
    return_bool: bool,
) -> Result<Vec<Sample>, ExprError> {
    let mut out = Vec::with_capacity(v.len());
    for sample in v {
        let (x, y) = if scalar_left {
            (s, sample.value)
        } else {
            (sample.value, s)
        };
        let r = arith(op, x, y).ok_or_else(|| {
            ExprError::Eval(format!("operator {op} between a vector and a scalar"))
        })?;
        if is_cmp && !return_bool {
            if r == 1.0 {
                out.push(sample);
            }
        } else {
            out.push(Sample {
                labels: drop_name(sample.labels),
                value: r,
            });
        }
    }
    Ok(out)
}

fn signature(labels: &Labels, b: &BinaryExpr) -> Labels {
    match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
        Some(LabelModifier::Include(on)) => labels
            .iter()
            .filter(|(k, _)| on.labels.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(LabelModifier::Exclude(ign)) => labels
            .iter()
            .filter(|(k, _)| !ign.labels.contains(k) && *k != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => drop_name(labels.clone()),
    }
}

fn vector_vector(b: &BinaryExpr, l: Vec<Sample>, r: Vec<Sample>) -> Result<Vec<Sample>, ExprError> {
    let op = b.op.id();
    if matches!(op, token::T_LAND | token::T_LOR | token::T_LUNLESS) {
        let rsigs: std::collections::HashSet<Labels> =
            r.iter().map(|s| signature(&s.labels, b)).collect();
        return Ok(match op {
            token::T_LAND => l
                .into_iter()
                .filter(|s| rsigs.contains(&signature(&s.labels, b)))
                .collect(),
            token::T_LUNLESS => l
                .into_iter()
                .filter(|s| !rsigs.contains(&signature(&s.labels, b)))
                .collect(),
            _ => {
                let lsigs: std::collections::HashSet<Labels> =
                    l.iter().map(|s| signature(&s.labels, b)).collect();
                let mut out = l;
                out.extend(
                    r.into_iter()
                        .filter(|s| !lsigs.contains(&signature(&s.labels, b))),
                );
                out
            }
        });
    }
    let mut right: HashMap<Labels, Sample> = HashMap::new();
    for s in r {
        let sig = signature(&s.labels, b);
        if right.insert(sig.clone(), s).is_some() {
            return Err(ExprError::Eval(format!(
                "found duplicate series for the match group {sig:?} on the right hand side of the operation {}",
                b.op
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    let is_cmp = b.op.is_comparison_operator();
    let return_bool = b.return_bool();
    let mut out = Vec::new();
    for s in l {
        let sig = signature(&s.labels, b);
        let Some(rs) = right.get(&sig) else { continue };
        if !seen.insert(sig.clone()) {
            return Err(ExprError::Eval(format!(
                "multiple matches for labels {sig:?}: many-to-one matching must be explicit (group_left/group_right are not supported)"
            )));
        }
        let v = arith(b.op, s.value, rs.value)
            .ok_or_else(|| ExprError::Eval(format!("operator {}", b.op)))?;
        let mut labels = match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
            Some(LabelModifier::Include(_)) => sig,
            Some(LabelModifier::Exclude(ign)) => s
                .labels
                .iter()
                .filter(|(k, _)| !ign.labels.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => s.labels.clone(),
        };
        if is_cmp && !return_bool {
            if v == 1.0 {
                out.push(Sample {
                    labels,
                    value: s.value,
                });
            }
        } else {
            labels.remove("__name__");
            out.push(Sample { labels, value: v });
        }
    }
    Ok(out)
}

/// Prometheus' extrapolated rate/increase/delta over the points of one series in
/// `(start, end]` (ms). `None` with fewer than two points.
pub fn extrapolated(
    points: &[(i64, f64)],
    start: i64,
    end: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first_t, first_v) = points[0];
    let (last_t, last_v) = points[points.len() - 1];
    let mut result = last_v - first_v;
    if is_counter {
        for w in points.windows(2) {
            if w[1].1 < w[0].1 {
                result += w[0].1;
            }
        }
    }
    let secs = |ms: i64| ms as f64 / 1000.0;
    let mut to_start = secs(first_t - start);
    let to_end = secs(end - last_t);
    let sampled = secs(last_t - first_t);
    let avg = sampled / (points.len() - 1) as f64;
    if is_counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg / 2.0
    };
    let mut factor = interval / sampled;
    if is_rate {
        factor /= secs(end - start);
    }
    Some(result * factor)
}

/// `histogram_quantile` over classic buckets (series with an `le` label), grouped by their
/// other labels (without `__name__`), like Prometheus' `bucketQuantile`.
pub fn histogram_quantile(q: f64, v: Vec<Sample>) -> Vec<Sample> {
    let mut groups: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
    let mut order = Vec::new();
    for s in v {
        let mut labels = drop_name(s.labels);
        let Some(le) = labels.remove("le") else {
            continue;
        };
        let Ok(bound) = le.parse::<f64>().or_else(|_| {
            if le == "+Inf" {
                Ok(f64::INFINITY)
            } else {
                Err(())
            }
        }) else {
            continue;
        };
        groups
            .entry(labels.clone())
            .or_insert_with(|| {
                order.push(labels);
                Vec::new()
            })
            .push((bound, s.value));
    }
    order
        .into_iter()
        .map(|labels| {
            let buckets = groups.remove(&labels).unwrap_or_default();
            Sample {
                labels,
                value: bucket_quantile(q, buckets),
            }
        })
        .collect()
}

fn bucket_quantile(q: f64, mut b: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.last().is_none_or(|x| x.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // merge equal bounds, force monotonic counts
    b.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 += later.1;
            true
        } else {
            false
        }
    });
    let mut max = f64::NEG_INFINITY;
    for x in b.iter_mut() {
        if x.1 < max {
            x.1 = max;
        }
        max = x.1;
    }
    if b.len() < 2 {
        return f64::NAN;
    }
    let total = b[b.len() - 1].1;
    if total == 0.0 || total.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * total;
    let i = b.iter().position(|x| x.1 >= rank).unwrap_or(b.len() - 1);
    if i == b.len() - 1 {
        return b[b.len() - 2].0;
    }
    if i == 0 && b[0].0 <= 0.0 {
        return b[0].0;
    }
    let (mut start, end, mut count) = (0.0, b[i].0, b[i].1);
    if i > 0 {
        start = b[i - 1].0;
        count -= b[i - 1].1;
        rank -= b[i - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use promql_parser::util::{walk_expr, ExprVisitor};

    use super::*;
    use crate::rules::spec::promql::{max_range_ms, nesting, parse, selectors};
    use crate::store::StoreLimits;
    use proptest::prelude::*;
    use std::time::Duration;

    fn labels(name: &str, extra: &[(&str, &str)]) -> Labels {
        let mut m: Labels = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.insert("__name__".into(), name.into());
        m
    }

    /// A store keeping everything, fed with `series` sampled at the given (ms, value) points.
    fn store(series: &[(Labels, Vec<(i64, f64)>)]) -> Store {
        let mut s = Store::new(StoreLimits::default());
        s.configure(StoreLimits::default(), {
            let mut all = Vec::new();
            selectors(&parse("{__name__=~\".+\"}").unwrap(), &mut all);
            all
        });
        let mut times: Vec<i64> = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.0))
            .collect();
        times.sort();
        times.dedup();
        for t in times {
            let batch: Vec<(Labels, f64)> = series
                .iter()
                .filter_map(|(l, p)| p.iter().find(|x| x.0 == t).map(|x| (l.clone(), x.1)))
                .collect();
            s.ingest(t, batch);
        }
        s
    }

    fn eval_at(s: &Store, q: &str, t: i64) -> Evaluated {
        eval(&parse(q).unwrap(), s, t).unwrap()
    }

    fn one(s: &Store, q: &str, t: i64) -> f64 {
        match eval_at(s, q, t).value {
            Value::Vector(v) if v.len() == 1 => v[0].value,
            Value::Scalar(x) => x,
            other => panic!("{q}: {other:?}"),
        }
    }

    #[test]
    fn rate_of_a_steady_counter_is_its_slope() {
        let pts = (1..=60).map(|i| (i * 1000, 10.0 * i as f64)).collect();
        let s = store(&[(labels("c_total", &[]), pts)]);
        assert!((one(&s, "rate(c_total[1m])", 60_000) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn increase_extrapolates_like_prometheus() {
        // points every 15 s: 5, 10, 15, 20. Hand-computed: sampled 45 s, to_start 15 s (<16.5,
        // and to_zero = 45*5/15 = 15), to_end 0: increase = 15 * 60/45 = 20.
        let pts = vec![
            (15_000, 5.0),
            (30_000, 10.0),
            (45_000, 15.0),
            (60_000, 20.0),
        ];
        let s = store(&[(labels("c_total", &[]), pts)]);
        assert!((one(&s, "increase(c_total[1m])", 60_000) - 20.0).abs() < 1e-9);
        assert!((one(&s, "rate(c_total[1m])", 60_000) - 20.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn counter_resets_are_handled() {
        // 5, 6, 1, 2 at 57..60 s: raw increase 3 (2-5+6); to_start 57 s > 1.1 s so half an
        // interval is added at the start (to_zero = 5 s is also > 1.1 s): 3 * 3.5/3 = 3.5.
        let pts = vec![(57_000, 5.0), (58_000, 6.0), (59_000, 1.0), (60_000, 2.0)];
        let s = store(&[(labels("c_total", &[]), pts)]);
        assert!((one(&s, "increase(c_total[1m])", 60_000) - 3.5).abs() < 1e-9);
    }

    #[test]
    fn histogram_quantile_against_known_buckets() {
        let b = |le: &str, v: f64| {
            (
                labels("h_bucket", &[("le", le), ("s", "x")]),
                vec![(1000, v)],
            )
        };
        let s = store(&[
            b("0.1", 10.0),
            b("0.2", 20.0),
            b("0.4", 40.0),
            b("+Inf", 40.0),
        ]);
        for (q, want) in [(0.25, 0.1), (0.5, 0.2), (0.75, 0.3), (1.0, 0.4)] {
            let got = one(&s, &format!("histogram_quantile({q}, h_bucket)"), 1000);
            assert!((got - want).abs() < 1e-12, "q={q}: {got}");
        }
        // rank in the +Inf bucket: the highest finite bound
        let s = store(&[
            b("0.1", 10.0),
            b("0.2", 20.0),
            b("0.4", 40.0),
            b("+Inf", 50.0),
        ]);
        assert_eq!(one(&s, "histogram_quantile(0.99, h_bucket)", 1000), 0.4);
        // no +Inf bucket: NaN
        let s = store(&[b("0.1", 10.0), b("0.2", 20.0)]);
        assert!(one(&s, "histogram_quantile(0.5, h_bucket)", 1000).is_nan());
    }

    #[test]
    fn aggregation_matching_and_set_operators() {
        let s = store(&[
            (
                labels("e", &[("svc", "a"), ("code", "1")]),
                vec![(1000, 1.0)],
            ),
            (
                labels("e", &[("svc", "a"), ("code", "2")]),
                vec![(1000, 2.0)],
            ),
            (
                labels("e", &[("svc", "b"), ("code", "1")]),
                vec![(1000, 4.0)],
            ),
            (labels("t", &[("svc", "a")]), vec![(1000, 30.0)]),
            (labels("t", &[("svc", "b")]), vec![(1000, 8.0)]),
        ]);
        let v = |q: &str| match eval_at(&s, q, 1000).value {
            Value::Vector(mut v) => {
                v.sort_by(|a, b| a.labels.cmp(&b.labels));
                v.into_iter()
                    .map(|x| (x.labels.get("svc").cloned().unwrap_or_default(), x.value))
                    .collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            v("sum by (svc) (e)"),
            [("a".into(), 3.0), ("b".into(), 4.0)]
        );
        assert_eq!(
            v("sum by (svc) (e) / on (svc) t"),
            [("a".into(), 0.1), ("b".into(), 0.5)]
        );
        assert_eq!(v("sum by (svc) (e) / t > 0.2"), [("b".into(), 0.5)]);
        assert_eq!(v("sum(e)"), [(String::new(), 7.0)]);
        assert_eq!(
            v("max without (code) (e)"),
            [("a".into(), 2.0), ("b".into(), 4.0)]
        );
        assert_eq!(v("count(e)"), [(String::new(), 3.0)]);
        assert_eq!(v("t and on (svc) e{code=\"2\"}"), [("a".into(), 30.0)]);
        assert_eq!(v("t unless on (svc) e{code=\"2\"}"), [("b".into(), 8.0)]);
        assert_eq!(
            v("t{svc=\"a\"} or on (svc) t"),
            [("a".into(), 30.0), ("b".into(), 8.0)]
        );
        assert_eq!(v("t > bool 10"), [("a".into(), 1.0), ("b".into(), 0.0)]);
        assert_eq!(one(&s, "2 * 3 + 1", 1000), 7.0);
        assert!(eval_at(&s, "nothing_here", 1000).missing);
        assert!(!eval_at(&s, "t", 1000).missing);
        // one-to-one matching refuses many-to-one
        assert!(eval(&parse("e / on (svc) t").unwrap(), &s, 1000).is_err());
    }

    #[test]
    fn unsupported_constructs_are_rejected_at_parse() {
        for q in [
            "rate(x[5m:1m])",
            "x @ 100",
            "count_values(\"v\", x)",
            "stddev(x)",
            "label_join(x, \"a\", \",\", \"b\")",
            "a / on (s) group_left b",
            "\"str\"",
        ] {
            assert!(matches!(parse(q), Err(ExprError::Unsupported(_))), "{q}");
        }
        assert!(matches!(parse("rate(x[5m]"), Err(ExprError::Parse(_))));
        // label_replace's regex and destination are judged at load, not at evaluation
        for q in [
            "label_replace(x, \"a\", \"$1\", \"b\", \"(\")",
            "label_replace(x, \"1a\", \"$1\", \"b\", \"(.*)\")",
        ] {
            assert!(matches!(parse(q), Err(ExprError::Parse(_))), "{q}");
        }
    }

    #[test]
    fn leak_functions_against_hand_computed_values() {
        // 100, 110, ... every 60 s: slope 1/6 per second, exactly linear.
        let pts: Vec<(i64, f64)> = (0..=10)
            .map(|i| (i * 60_000, 100.0 + 10.0 * i as f64))
            .collect();
        let s = store(&[(labels("m", &[("s", "a")]), pts)]);
        let t = 630_000;
        assert!((one(&s, "deriv(m[5m])", t) - 1.0 / 6.0).abs() < 1e-12);
        // at 630 s the line is at 205; an hour on, 205 + 600
        assert!((one(&s, "predict_linear(m[5m], 3600)", t) - 805.0).abs() < 1e-9);
        assert_eq!(one(&s, "changes(m[5m])", t), 4.0);
        assert_eq!(one(&s, "resets(m[5m])", t), 0.0);
        // points 360..600 s: 160 170 180 190 200
        assert_eq!(one(&s, "stdvar_over_time(m[5m])", t), 200.0);
        assert_eq!(one(&s, "quantile_over_time(0.5, m[5m])", t), 180.0);
        assert_eq!(one(&s, "quantile_over_time(0.25, m[5m])", t), 170.0);
        assert_eq!(one(&s, "timestamp(m)", t), 600.0);
        assert_eq!(one(&s, "timestamp(m offset 2m)", t), 480.0);
        assert_eq!(one(&s, "sgn(m - 1000)", t), -1.0);
        assert_eq!(one(&s, "clamp(m, 0, 150)", t), 150.0);
        let ev = eval_at(&s, "absent(m{s=\"b\", x=~\"y\"})", t);
        let Value::Vector(v) = ev.value else { panic!() };
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].labels,
            labels("", &[("s", "b")])
                .into_iter()
                .filter(|(k, _)| k != "__name__")
                .collect()
        );
        assert!(matches!(eval_at(&s, "absent(m)", t).value, Value::Vector(v) if v.is_empty()));
    }

    #[test]
    fn topk_bottomk_and_quantile_aggregations() {
        let s = store(&[
            (labels("m", &[("s", "a")]), vec![(1000, 1.0)]),
            (labels("m", &[("s", "b")]), vec![(1000, f64::NAN)]),
            (labels("m", &[("s", "c")]), vec![(1000, 3.0)]),
            (labels("m", &[("s", "d")]), vec![(1000, 2.0)]),
        ]);
        let names = |q: &str| match eval_at(&s, q, 1000).value {
            Value::Vector(v) => {
                let mut n: Vec<String> = v.iter().map(|x| x.labels["s"].clone()).collect();
                n.sort();
                n
            }
            other => panic!("{other:?}"),
        };
        // NaN ranks below every number, for topk and bottomk alike
        assert_eq!(names("topk(2, m)"), ["c", "d"]);
        assert_eq!(names("bottomk(2, m)"), ["a", "d"]);
        assert_eq!(names("topk(3, m)"), ["a", "c", "d"]);
        assert!(names("topk(0, m)").is_empty());
        // NaN sorts first: 0.5 of [NaN, 1, 2, 3] is between 1 and 2
        assert_eq!(one(&s, "quantile(0.5, m)", 1000), 1.5);
        assert_eq!(one(&s, "quantile(2, m)", 1000), f64::INFINITY);
    }

    #[test]
    fn a_parser_panic_is_a_parse_error() {
        // Found by the `expression` fuzz target: promql-parser panics converting the range.
        assert!(matches!(parse("vE[0.24E71]"), Err(ExprError::Parse(_))));
    }

    /// Edges from the root to the deepest leaf.
    fn tree_depth(e: &Expr) -> usize {
        /// Depth of the node being visited and the deepest seen, through promql-parser's walk.
        struct Depth(usize, usize);
        impl ExprVisitor for Depth {
            type Error = std::convert::Infallible;
            fn pre_visit(&mut self, _: &Expr) -> Result<bool, Self::Error> {
                self.1 = self.1.max(self.0);
                self.0 += 1;
                Ok(true)
            }
            fn post_visit(&mut self, _: &Expr) -> Result<bool, Self::Error> {
                self.0 -= 1;
                Ok(true)
            }
        }
        let mut d = Depth(0, 0);
        let Ok(_) = walk_expr(&mut d, e);
        d.1
    }

    #[test]
    fn nesting_counts_brackets_and_chained_operators_outside_strings() {
        for (text, want) in [
            ("x", 0),
            ("abs(x)", 1),
            ("-x", 1),
            ("a + b + c", 2),
            ("a and b or c unless d", 3),
            ("a >= bool b", 1),
            ("sum by (l) (rate(x[5m]))", 3),
            // matchers and strings: no operators, no brackets
            (r#"x{a!="(((", b=~"[a-z]+-+", c="\")"} / 2"#, 2),
            (r"`(((` + '\'(('", 1),
            ("((((", 4), // unclosed: the parser says what is wrong
            ("))))x", 0),
        ] {
            assert_eq!(nesting(text), want, "{text}");
        }
    }

    /// The deepest expressions `parse` accepts, of every shape that nests.
    fn deepest() -> Vec<String> {
        let d = MAX_DEPTH;
        vec![
            format!("{}1{}", "(".repeat(d), ")".repeat(d)),
            format!("{}x", "-".repeat(d)),
            format!("{}vector(1){}", "abs(".repeat(d - 1), ")".repeat(d - 1)),
            format!("{}x{}", "sum(".repeat(d), ")".repeat(d)),
            vec!["x"; d + 1].join(" + "),
            vec!["x"; d + 1].join(" ^ "),
            vec!["x"; d + 1].join(" or "),
        ]
    }

    #[test]
    fn expressions_deeper_than_the_limit_are_refused_before_parsing() {
        for text in deepest() {
            let e = parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(tree_depth(&e) <= MAX_DEPTH, "{text}");
            let deeper = format!("-({text})");
            assert_eq!(parse(&deeper), Err(ExprError::TooDeep), "{deeper}");
        }
        // Refused at once, on a small stack: neither the parser nor a walk of the tree ran.
        std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(|| {
                let started = std::time::Instant::now();
                for text in [
                    format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
                    format!("{}vector(1)", "-".repeat(100_000)),
                    vec!["1"; 100_000].join("+"),
                ] {
                    assert_eq!(parse(&text), Err(ExprError::TooDeep));
                }
                assert!(started.elapsed() < Duration::from_secs(1));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn the_deepest_expressions_parse_and_evaluate_on_a_small_stack() {
        // Tokio's worker threads have 2 MiB; a quarter of that is plenty in a debug build.
        std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(|| {
                let s = store(&[(labels("x", &[]), vec![(1000, 2.0)])]);
                for text in deepest() {
                    let e = parse(&text).unwrap();
                    assert!(eval(&e, &s, 1000).is_ok(), "{text}");
                    assert!(!format!("{e}").is_empty()); // Display recurses too
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn the_evaluator_stops_at_the_depth_limit_whatever_tree_it_is_given() {
        let s = store(&[(labels("x", &[]), vec![(1000, 2.0)])]);
        let mut e = parse("x").unwrap();
        for _ in 0..MAX_DEPTH {
            e = Expr::Paren(promql_parser::parser::ParenExpr { expr: Box::new(e) });
        }
        assert!(eval(&e, &s, 1000).is_ok());
        e = Expr::Paren(promql_parser::parser::ParenExpr { expr: Box::new(e) });
        assert_eq!(eval(&e, &s, 1000), Err(ExprError::TooDeep));
    }

    #[test]
    fn huge_ranges_and_offsets_saturate_instead_of_overflowing() {
        let pts = (1..=120).map(|i| (i * 1000, 10.0 * i as f64)).collect();
        let s = store(&[(labels("c_total", &[]), pts)]);
        for q in [
            "rate(c_total[100y])",
            "c_total offset 1000y",
            "c_total offset -1000y",
            "max_over_time(c_total[9999999d])",
            "count_over_time(c_total[1e18])",
            "rate(c_total[1e18] offset 1e18)",
            "increase(c_total[1e18] offset -1e18)",
        ] {
            let e = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!(eval(&e, &s, 120_000).is_ok(), "{q}");
            assert!(max_range_ms(&e) >= 0, "{q}");
        }
        assert_eq!(
            max_range_ms(&parse("rate(c_total[1e18] offset 1e18)").unwrap()),
            i64::MAX
        );
        // every sample is in a 100 y range (rate divides by the whole range, like Prometheus)
        assert_eq!(one(&s, "count_over_time(c_total[100y])", 120_000), 120.0);
        assert!(one(&s, "rate(c_total[100y])", 120_000) > 0.0);
    }

    #[test]
    fn rate_with_an_offset_extrapolates_over_the_offset_range() {
        // A steady 10/s counter: the rate a minute ago is 10/s too.
        let pts = (1..=180).map(|i| (i * 1000, 10.0 * i as f64)).collect();
        let s = store(&[(labels("c_total", &[]), pts)]);
        assert!((one(&s, "rate(c_total[1m] offset 1m)", 180_000) - 10.0).abs() < 1e-9);
        assert!((one(&s, "increase(c_total[1m] offset 1m)", 180_000) - 600.0).abs() < 1e-9);
    }

    proptest! {
        #[test]
        fn nesting_is_an_upper_bound_of_the_tree_depth(e in arb_expr()) {
            if let Ok(expr) = parse(&e) {
                prop_assert!(tree_depth(&expr) <= nesting(&e), "{}: {} > {}", e, tree_depth(&expr), nesting(&e));
            }
        }

        #[test]
        fn rate_of_any_linear_counter_is_its_slope(
            slope in 0.001f64..1e6, step_s in 1i64..30, n in 3i64..40, start in 0f64..1e9
        ) {
            let step = step_s * 1000;
            let end = n * step;
            let pts: Vec<(i64, f64)> = (1..=n).map(|i| (i * step, start + slope * (i * step) as f64 / 1000.0)).collect();
            // the range covers exactly (n-1) intervals after the first point
            let got = extrapolated(&pts, end - (n - 1) * step - step, end, true, true).unwrap();
            prop_assert!((got - slope).abs() <= slope * 1e-9 + 1e-12, "got {} want {}", got, slope);
        }

        #[test]
        fn increase_is_never_negative_for_counters(
            vals in proptest::collection::vec(0f64..1e6, 2..50), range_s in 1i64..600
        ) {
            let pts: Vec<(i64, f64)> = vals.iter().enumerate().map(|(i, v)| ((i as i64 + 1) * 1000, *v)).collect();
            let end = pts.last().unwrap().0;
            let got = extrapolated(&pts, end - range_s.max(pts.len() as i64) * 1000, end, true, false).unwrap();
            prop_assert!(got >= 0.0);
        }

        #[test]
        fn quantile_is_monotonic_and_within_bounds(
            counts in proptest::collection::vec(0f64..1000.0, 2..12), q1 in 0f64..=1.0, q2 in 0f64..=1.0
        ) {
            let mut cum = 0.0;
            let mut v = Vec::new();
            for (i, c) in counts.iter().enumerate() {
                cum += c;
                let le = if i == counts.len() - 1 { "+Inf".to_string() } else { format!("{}", (i + 1) as f64 * 0.5) };
                v.push(Sample { labels: labels("h_bucket", &[("le", &le)]), value: cum });
            }
            let a = histogram_quantile(q1.min(q2), v.clone())[0].value;
            let b = histogram_quantile(q1.max(q2), v)[0].value;
            if cum == 0.0 {
                prop_assert!(a.is_nan() && b.is_nan());
            } else {
                prop_assert!(a <= b + 1e-12, "{} > {}", a, b);
                prop_assert!(a >= 0.0 && b <= (counts.len() - 1) as f64 * 0.5 + 1e-12);
            }
        }

        #[test]
        fn evaluator_never_panics_on_generated_expressions(e in arb_expr()) {
            let s = store(&[
                (labels("a", &[("x", "1")]), vec![(1000, 1.0), (2000, 3.0)]),
                (labels("a", &[("x", "2")]), vec![(1000, 0.0), (2000, 0.0)]),
                (labels("b", &[("x", "1"), ("le", "0.5")]), vec![(2000, 2.0)]),
                (labels("b", &[("x", "1"), ("le", "+Inf")]), vec![(2000, 4.0)]),
            ]);
            if let Ok(expr) = parse(&e) {
                let _ = eval(&expr, &s, 2000);
            }
        }
    }

    fn arb_expr() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("a{x=\"1\"}".to_string()),
            Just("rate(a[5s])".to_string()),
            Just("increase(b[1m])".to_string()),
            Just("missing".to_string()),
            (-5f64..5.0).prop_map(|v| format!("({v})")),
        ];
        leaf.prop_recursive(4, 32, 3, |inner| {
            prop_oneof![
                (
                    inner.clone(),
                    inner.clone(),
                    prop_oneof![
                        Just("+"),
                        Just("-"),
                        Just("*"),
                        Just("/"),
                        Just(">"),
                        Just("< bool"),
                        Just("and"),
                        Just("or"),
                        Just("unless"),
                        Just("/ on (x)"),
                        Just("^"),
                        Just("%")
                    ]
                )
                    .prop_map(|(a, b, op)| format!("({a} {op} {b})")),
                (
                    inner.clone(),
                    prop_oneof![
                        Just("sum"),
                        Just("avg"),
                        Just("max"),
                        Just("min"),
                        Just("count")
                    ],
                    prop_oneof![Just(""), Just(" by (x)"), Just(" without (x)")]
                )
                    .prop_map(|(a, agg, m)| format!("{agg}{m} ({a})")),
                inner
                    .clone()
                    .prop_map(|a| format!("histogram_quantile(0.9, {a})")),
                inner.prop_map(|a| format!("abs({a})")),
            ]
        })
    }
}
