//! The PromQL subset of rule files: promql-parser's syntax tree, checked against what the
//! evaluator (`rules::eval`) supports, and what the engine needs to know about an expression
//! before evaluating it (its selectors, longest range, size). Parsing happens when a rule file
//! is loaded, so anything unsupported is a load error, never an evaluation error.
//!
//! The tree is walked with promql-parser's own [`walk_expr`]/[`ExprVisitor`].

use std::{cell::Cell, convert::Infallible, time::Duration};

use promql_parser::{
    label::Matcher,
    parser::{token, Expr, Offset, VectorMatchCardinality, VectorSelector},
    util::{walk_expr, ExprVisitor},
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("{0}")]
    Parse(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Eval(String),
    #[error("nested more than {MAX_DEPTH} levels deep (each bracket counts, and so does each operator chained at one level: split long `a + b + ...` chains with parentheses)")]
    TooDeep,
}

/// Deepest nesting an expression may have. The parser, the checks and the evaluator all
/// recurse into the syntax tree, and a stack overflow would abort the agent; the parser also
/// takes time quadratic in the length of an operator chain. Parsing and evaluating 128
/// levels takes less than 256 KiB of stack in a debug build (tokio's worker threads have
/// 2 MiB; see the tests), and no hand-written rule comes close.
pub const MAX_DEPTH: usize = 128;

/// An upper bound of the depth of `text`'s syntax tree (edges from the root to the deepest
/// leaf), from its characters alone, so that it can be checked before parsing: each bracket
/// level adds one, and so does each operator at that level (`a + b + c` is two binary
/// expressions, one inside the other; a unary minus is one more). Strings are skipped, and so
/// are the matchers inside `{...}`.
pub fn nesting(text: &str) -> usize {
    /// One bracket level: operators seen at it, its deepest inner level, whether it is `{`.
    struct Level {
        ops: usize,
        inner: usize,
        braces: bool,
    }
    let mut levels = vec![Level {
        ops: 0,
        inner: 0,
        braces: false,
    }];
    let close = |levels: &mut Vec<Level>| {
        if levels.len() > 1 {
            if let Some(l) = levels.pop() {
                let depth = l.ops + l.inner + 1;
                if let Some(outer) = levels.last_mut() {
                    outer.inner = outer.inner.max(depth);
                }
            }
        }
    };
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let in_braces = levels.last().is_some_and(|l| l.braces);
        let mut op = false;
        match c {
            '"' | '\'' | '`' => {
                while let Some((_, d)) = chars.next() {
                    if d == c {
                        break;
                    }
                    if d == '\\' && c != '`' {
                        chars.next();
                    }
                }
            }
            '(' | '[' | '{' => levels.push(Level {
                ops: 0,
                inner: 0,
                braces: c == '{',
            }),
            ')' | ']' | '}' => close(&mut levels),
            '+' | '-' | '*' | '/' | '%' | '^' => op = true,
            '=' | '!' | '<' | '>' => {
                op = true;
                chars.next_if(|(_, d)| *d == '=' || *d == '~');
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let mut end = at + 1;
                while let Some((i, _)) =
                    chars.next_if(|(_, d)| d.is_ascii_alphanumeric() || *d == '_' || *d == ':')
                {
                    end = i + 1;
                }
                op = ["and", "or", "unless", "atan2"].contains(&&text[at..end]);
            }
            _ => {}
        }
        if op && !in_braces {
            if let Some(l) = levels.last_mut() {
                l.ops += 1;
            }
        }
    }
    while levels.len() > 1 {
        close(&mut levels);
    }
    levels.first().map_or(0, |l| l.ops + l.inner)
}

/// Parses and validates an expression.
///
/// promql-parser panics on some inputs (a range of `[0.24E71]` overflows its duration
/// conversion; found by `cargo xtask fuzz`): a panic in the parser is a parse error here, so
/// a bad rule file can never take down `check rules` or a reload.
///
/// Expressions nested deeper than [`MAX_DEPTH`] are refused before the parser sees them.
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    if nesting(text) > MAX_DEPTH {
        return Err(ExprError::TooDeep);
    }
    quiet_parser_panics();
    PARSING.set(true);
    let parsed = std::panic::catch_unwind(|| promql_parser::parser::parse(text));
    PARSING.set(false);
    let parsed = parsed.map_err(|_| {
        ExprError::Parse("the expression could not be parsed (parser failure)".into())
    })?;
    let expr = parsed.map_err(ExprError::Parse)?;
    validate(&expr)?;
    Ok(expr)
}

thread_local! {
    /// This thread is inside promql-parser, whose panics [`parse`] turns into errors.
    static PARSING: Cell<bool> = const { Cell::new(false) };
}

/// Keeps the panics [`parse`] catches out of stderr (a "thread panicked" message and a
/// backtrace in `check rules` output or the agent's log read like a crash, for what is a parse
/// error). Panics anywhere else print as before, through the hook that was installed.
fn quiet_parser_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PARSING.get() {
                previous(info);
            }
        }));
    });
}

/// The functions the subset supports.
pub const FUNCS: &[&str] = &[
    "rate",
    "increase",
    "delta",
    "irate",
    "idelta",
    "deriv",
    "predict_linear",
    "changes",
    "resets",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "present_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "quantile_over_time",
    "absent",
    "absent_over_time",
    "histogram_quantile",
    "abs",
    "sgn",
    "clamp",
    "clamp_min",
    "clamp_max",
    "label_replace",
    "timestamp",
    "scalar",
    "vector",
    "time",
];

fn validate(expr: &Expr) -> Result<(), ExprError> {
    walk_expr(&mut Check::default(), expr).map(|_| ())
}

/// What [`validate`] refuses, node by node in promql-parser's walk (the first node refused, in
/// the order of the text, is the error). `strings` holds, for each node on the way down,
/// whether its children may be string literals (label_replace's arguments, through brackets).
#[derive(Default)]
struct Check {
    strings: Vec<bool>,
}

impl ExprVisitor for Check {
    type Error = ExprError;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ExprError> {
        let unsupported = |what: &str| Err(ExprError::Unsupported(what.to_string()));
        let strings_here = self.strings.last().copied().unwrap_or(false);
        let mut strings_below = false;
        match expr {
            Expr::NumberLiteral(_) => {}
            Expr::StringLiteral(_) if strings_here => {}
            Expr::StringLiteral(_) => return unsupported("string literals"),
            Expr::Paren(_) => strings_below = strings_here,
            Expr::Unary(_) => {}
            Expr::VectorSelector(vs) => validate_selector(vs)?,
            Expr::MatrixSelector(ms) => validate_selector(&ms.vs)?,
            Expr::Subquery(_) => return unsupported("subqueries"),
            Expr::Extension(_) => return unsupported("extensions"),
            Expr::Aggregate(a) => {
                let op = a.op.id();
                if ![
                    token::T_SUM,
                    token::T_AVG,
                    token::T_MAX,
                    token::T_MIN,
                    token::T_COUNT,
                    token::T_TOPK,
                    token::T_BOTTOMK,
                    token::T_QUANTILE,
                ]
                .contains(&op)
                {
                    return unsupported(&format!("aggregation {}", a.op));
                }
                // The walk does not visit the parameter (`topk(3, ...)`).
                if let Some(p) = &a.param {
                    validate(p)?;
                }
            }
            Expr::Binary(b) => {
                if let Some(m) = &b.modifier {
                    if matches!(
                        m.card,
                        VectorMatchCardinality::ManyToOne(_) | VectorMatchCardinality::OneToMany(_)
                    ) {
                        return unsupported("group_left/group_right");
                    }
                }
                if b.op.id() == token::T_ATAN2 {
                    return unsupported("atan2");
                }
            }
            Expr::Call(c) => {
                if !FUNCS.contains(&c.func.name) {
                    return unsupported(&format!("function {}", c.func.name));
                }
                if c.func.name == "label_replace" {
                    // The parser has checked the types: a vector, then four strings.
                    let text = |i: usize| string_arg(&c.args.args[i]).unwrap_or_default();
                    if !valid_label_name(&text(1)) {
                        return Err(ExprError::Parse(format!(
                            "invalid destination label name in label_replace(): {}",
                            text(1)
                        )));
                    }
                    anchored_regex(&text(4)).map_err(|e| {
                        ExprError::Parse(format!(
                            "invalid regular expression in label_replace(): {}: {e}",
                            text(4)
                        ))
                    })?;
                    strings_below = true;
                }
            }
        }
        self.strings.push(strings_below);
        Ok(true)
    }

    fn post_visit(&mut self, _: &Expr) -> Result<bool, ExprError> {
        self.strings.pop();
        Ok(true)
    }
}

/// The text of a string argument (through brackets).
pub fn string_arg(e: &Expr) -> Option<String> {
    match e {
        Expr::StringLiteral(s) => Some(s.val.clone()),
        Expr::Paren(p) => string_arg(&p.expr),
        _ => None,
    }
}

/// Prometheus' label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A regex anchored at both ends, as Prometheus compiles `label_replace`'s (RE2 syntax, which
/// the `regex` crate shares, expansion of `$1`, `${name}` included).
pub fn anchored_regex(re: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(1 << 20)
        .build()
}

fn validate_selector(vs: &VectorSelector) -> Result<(), ExprError> {
    if vs.at.is_some() {
        return Err(ExprError::Unsupported("@ modifier".into()));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(ExprError::Unsupported("'or' inside a selector".into()));
    }
    Ok(())
}

/// Every selector's matchers (what the store must keep for this expression).
pub fn selectors(expr: &Expr, out: &mut Vec<Vec<Matcher>>) {
    walk(expr, |e| match e {
        Expr::VectorSelector(vs) => out.push(matchers(vs)),
        Expr::MatrixSelector(ms) => out.push(matchers(&ms.vs)),
        _ => {}
    });
}

/// The longest range plus offset in the expression, in ms.
pub fn max_range_ms(expr: &Expr) -> i64 {
    let mut max = 0i64;
    walk(expr, |e| {
        let (range, vs) = match e {
            Expr::VectorSelector(vs) => (Duration::ZERO, vs),
            Expr::MatrixSelector(ms) => (ms.range, &ms.vs),
            _ => return,
        };
        let off = match vs.offset {
            Some(Offset::Pos(d)) => d,
            _ => Duration::ZERO,
        };
        max = max.max(millis(range.saturating_add(off)));
    });
    max
}

/// The nodes of the syntax tree: what an expression costs in memory (a node takes about
/// 150 bytes).
pub fn node_count(expr: &Expr) -> usize {
    let mut n = 0;
    walk(expr, |_| n += 1);
    n
}

/// Calls `f` on every node, `expr` first, through promql-parser's [`walk_expr`] (recursion
/// bounded by [`MAX_DEPTH`] for trees from [`parse`]).
fn walk(expr: &Expr, f: impl FnMut(&Expr)) {
    struct Each<F>(F);
    impl<F: FnMut(&Expr)> ExprVisitor for Each<F> {
        type Error = Infallible;
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, Infallible> {
            (self.0)(e);
            Ok(true)
        }
    }
    let Ok(_) = walk_expr(&mut Each(f), expr);
}

pub fn matchers(vs: &VectorSelector) -> Vec<Matcher> {
    let mut out = vs.matchers.matchers.clone();
    if let Some(name) = &vs.name {
        out.push(Matcher::new(
            promql_parser::label::MatchOp::Equal,
            "__name__",
            name,
        ));
    }
    out
}

/// `d` in ms, saturating: promql-parser takes ranges and offsets of up to `u64::MAX`
/// seconds (`x[1e18]`), and times derived from them saturate too, so nothing overflows.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub fn offset_ms(vs: &VectorSelector) -> i64 {
    match vs.offset {
        Some(Offset::Pos(d)) => millis(d),
        Some(Offset::Neg(d)) => -millis(d),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks run in promql-parser's walk: strings only where label_replace takes them
    /// (through brackets too), the first refused node in text order is the error, and an
    /// aggregation's parameter, which the walk skips, is checked as well.
    #[test]
    fn the_walk_checks_every_node_in_order() {
        for q in [
            "label_replace(x, \"dst\", \"$1\", \"src\", \"(.*)\")",
            "label_replace(x, (\"dst\"), \"$1\", (\"src\"), (\"(.*)\"))",
            "sum by (a) (label_replace(rate(x[5m]), \"b\", \"$1\", \"a\", \"(.+)\")) > 1",
            "topk(3, x) or -vector(1)",
        ] {
            assert!(parse(q).is_ok(), "{q}: {:?}", parse(q));
        }
        assert_eq!(
            parse("label_replace(x, \"d\", \"$1\", \"s\", \"(.*)\") + on (a) group_left x"),
            Err(ExprError::Unsupported("group_left/group_right".into()))
        );
        assert_eq!(
            parse("abs(x) + stddev(rate(x[5m:1m]))"),
            Err(ExprError::Unsupported("aggregation stddev".into())),
            "the outer node first"
        );
        assert_eq!(
            parse("x1 atan2 x2 + x @ 5"),
            Err(ExprError::Unsupported("atan2".into())),
            "left before right"
        );
        assert_eq!(
            parse("topk(scalar(x @ 5), y)"),
            Err(ExprError::Unsupported("@ modifier".into()))
        );
    }

    #[test]
    fn selectors_ranges_and_sizes_come_from_the_walk() {
        let e = parse("sum(rate(a{x=\"1\"}[5m] offset 1m)) / b + max_over_time(c[1h])").unwrap();
        let mut sel = Vec::new();
        selectors(&e, &mut sel);
        let names: Vec<String> = sel
            .iter()
            .map(|m| {
                m.iter()
                    .find(|m| m.name == "__name__")
                    .unwrap()
                    .value
                    .clone()
            })
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(max_range_ms(&e), 3_600_000);
        // binary(binary(sum(call(matrix)), b), call(matrix))
        assert_eq!(node_count(&e), 8);
    }
}
