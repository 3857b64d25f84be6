//! `decide:` of a charter: labels, the stage cascade (rules, embedded classifier, LLM with
//! its budget) and the thresholds between stages.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::FieldSpec;
use crate::config::components::charter::{CharterChecker, Known};
use crate::config::components::names::Scope;
use crate::config::diag::{Check, list};
use crate::config::raw::{Entries, Location, RawField, S, Scalar};
use crate::expr::Expr;
use crate::template::Template;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecide {
    pub labels: Option<S<Vec<S<String>>>>,
    pub stages: Option<S<Vec<S<RawStage>>>>,
    pub otherwise: Option<S<String>>,
    pub extract: Option<S<Entries<S<RawField>>>>,
}

/// One stage: exactly one of the keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub rules: Option<S<Vec<S<RawRule>>>>,
    pub embedded: Option<S<RawEmbedded>>,
    pub llm: Option<S<RawLlm>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub when: Option<S<Scalar>>,
    pub label: Option<S<String>>,
    pub fields: Option<Entries<S<Scalar>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmbedded {
    pub examples: Option<S<String>>,
    pub accept_above: Option<S<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlm {
    pub provider: Option<S<String>>,
    pub prompt: Option<S<String>>,
    pub accept_above: Option<S<f64>>,
    pub fallback: Option<S<Vec<S<String>>>>,
    pub rate_limit: Option<S<i64>>,
    pub budget: Option<S<RawBudget>>,
    pub redact: Option<S<Vec<S<String>>>>,
    pub cache_ttl: Option<S<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub tokens_per_day: Option<S<i64>>,
    pub cost_per_day: Option<S<f64>>,
    pub on_exhausted: Option<S<String>>,
    pub max_wait: Option<S<Scalar>>,
}

#[derive(Debug, Clone)]
pub struct Decide {
    pub labels: Vec<String>,
    pub stages: Vec<Stage>,
    pub otherwise: Otherwise,
    pub extract: BTreeMap<String, FieldSpec>,
}

#[derive(Debug, Clone)]
pub enum Stage {
    /// Deterministic rules: the first whose `when` holds decides with confidence 1.
    Rules(Vec<Rule>),
    /// The embedded classifier.
    Embedded(EmbeddedStage),
    /// An LLM provider.
    Llm(LlmStage),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub when: Expr,
    pub label: String,
    pub fields: BTreeMap<String, Template>,
}

#[derive(Debug, Clone)]
pub struct EmbeddedStage {
    /// Labelled examples file (CSV `text,label` or JSONL), relative to the project.
    pub examples: String,
    pub accept_above: f64,
}

#[derive(Debug, Clone)]
pub struct LlmStage {
    pub provider: String,
    /// Path of the prompt file, relative to the project.
    pub prompt: String,
    /// The prompt file, compiled.
    pub template: Template,
    pub accept_above: f64,
    /// Providers tried in order when `provider` fails.
    pub fallback: Vec<String>,
    /// Requests per minute for this charter (per node).
    pub rate_limit: Option<u32>,
    pub budget: LlmBudget,
    /// Payload keys (or dotted paths) replaced by `[redacted]` before anything is sent.
    pub redact: Vec<String>,
    /// How long a validated answer is served from the response cache for a byte-identical
    /// request (`cache_ttl:`, default 7 days); zero (`cache_ttl: 0`) turns the cache off.
    pub cache_ttl: Duration,
}

/// A charter's daily LLM budget and what happens when it (or the rate limit) runs out. The
/// day is the UTC day; the server counts the spend in its store, so the budget holds for
/// every node and across restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmBudget {
    /// Prompt plus completion tokens per UTC day.
    pub tokens_per_day: Option<u64>,
    /// In the providers' price unit.
    pub cost_per_day: Option<f64>,
    pub on_exhausted: OnExhausted,
    /// Longest wait for the next window with `on_exhausted: wait` (default 60 s).
    pub max_wait: Duration,
}

impl Default for LlmBudget {
    fn default() -> Self {
        LlmBudget {
            tokens_per_day: None,
            cost_per_day: None,
            on_exhausted: OnExhausted::Escalate,
            max_wait: Duration::from_secs(60),
        }
    }
}

/// What an exhausted rate limit or budget does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExhausted {
    /// Wait (bounded by `max_wait`) for the next window, then escalate if still exhausted.
    Wait,
    /// Escalate at once with the reason.
    Escalate,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Otherwise {
    Escalate,
    Label(String),
}

impl CharterChecker<'_> {
    pub(crate) fn decide(&mut self, raw: S<RawDecide>, known: &Known) -> Option<Decide> {
        let at = raw.referenced;
        let d: RawDecide = raw.value;
        let labels = match &d.labels {
            Some(l) if !l.value.is_empty() => {
                let mut out: Vec<String> = Vec::new();
                let mut ok = true;
                for label in &l.value {
                    let v = label.value.trim();
                    if v.is_empty() || v == "escalate" {
                        self.err(
                            label.referenced,
                            format!("label `{v}` is not allowed; expected a non-empty name other than `escalate`"),
                        );
                        ok = false;
                    } else if out.iter().any(|o| o == v) {
                        self.err(
                            label.referenced,
                            format!("label `{v}` is listed twice; expected each label once"),
                        );
                        ok = false;
                    } else {
                        out.push(v.to_string());
                    }
                }
                ok.then_some(out)
            }
            Some(l) => {
                self.err(
                    l.referenced,
                    "`labels` is empty; expected the labels a decision may choose from",
                );
                None
            }
            None => {
                self.err(at, "missing `labels`: expected the labels a decision may choose from, such as `labels: [billing, bug, other]`");
                None
            }
        };
        let stages = match d.stages {
            Some(s) if !s.value.is_empty() => {
                let parsed: Vec<Option<Stage>> = s
                    .value
                    .into_iter()
                    .map(|st| self.stage(st, known))
                    .collect();
                parsed.into_iter().collect::<Option<Vec<_>>>()
            }
            Some(s) => {
                self.err(
                    s.referenced,
                    "`stages` is empty; expected at least one of `rules`, `embedded`, `llm`",
                );
                None
            }
            None => {
                self.err(at, "missing `stages`: expected a list of `rules`, `embedded` or `llm` stages, tried in order");
                None
            }
        };
        let otherwise = match &d.otherwise {
            None => Some(Otherwise::Escalate),
            Some(o) if o.value.trim() == "escalate" => Some(Otherwise::Escalate),
            Some(o) => self.label(o, known, "otherwise").map(Otherwise::Label),
        };
        let mut extract = BTreeMap::new();
        let mut extract_ok = true;
        if let Some(e) = d.extract {
            for (name, field) in e.value.0 {
                match self.field(field) {
                    Some(spec) => {
                        extract.insert(name.value, spec);
                    }
                    None => extract_ok = false,
                }
            }
        }
        Some(Decide {
            labels: labels?,
            stages: stages?,
            otherwise: otherwise?,
            extract: extract_ok.then_some(extract)?,
        })
    }

    /// A label that must be declared in `decide.labels`.
    pub(crate) fn label(&mut self, v: &S<String>, known: &Known, key: &str) -> Option<String> {
        let label = v.value.trim().to_string();
        match &known.labels {
            Some(labels) if labels.contains(&label) => Some(label),
            Some(labels) => {
                let extra = if key == "otherwise" {
                    " or `escalate`"
                } else {
                    ""
                };
                self.err(
                    v.referenced,
                    format!(
                        "{key} label `{label}` is not in `decide.labels`; expected one of {}{extra}",
                        list(labels)
                    ),
                );
                None
            }
            // Missing labels are reported once, on `decide`.
            None => None,
        }
    }

    pub(crate) fn stage(&mut self, raw: S<RawStage>, known: &Known) -> Option<Stage> {
        let at = raw.referenced;
        let s: RawStage = raw.value;
        let given = [s.rules.is_some(), s.embedded.is_some(), s.llm.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given != 1 {
            self.err(
                at,
                "each stage needs exactly one of `rules`, `embedded` or `llm`",
            );
            return None;
        }
        if let Some(rules) = s.rules {
            let parsed: Vec<Option<Rule>> = rules
                .value
                .into_iter()
                .map(|r| self.rule(r, known))
                .collect();
            return parsed
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(Stage::Rules);
        }
        if let Some(e) = s.embedded {
            let at = e.referenced;
            let examples = self.project_file(
                &e.value.examples,
                at,
                "examples",
                "a labelled examples file (CSV `text,label` or JSONL)",
            );
            let accept = self.threshold(&e.value.accept_above, at);
            return Some(Stage::Embedded(EmbeddedStage {
                examples: examples?,
                accept_above: accept?,
            }));
        }
        if let Some(l) = s.llm {
            let at = l.referenced;
            let provider = match &l.value.provider {
                Some(p) => {
                    self.required_text(&Some(p.clone()), at, "provider", "a model provider name")
                }
                None => Some("default".to_string()),
            };
            let prompt = self.project_file(
                &l.value.prompt,
                at,
                "prompt",
                "a prompt template file such as `prompts/triage.md`",
            );
            let template = prompt.as_ref().and_then(|path| {
                let text = self.src.files.get(path).cloned().unwrap_or_default();
                let at = l.value.prompt.as_ref().map(|p| p.referenced).unwrap_or(at);
                match Template::parse(&text) {
                    Ok(t) => {
                        self.check_prompt_names(at, path, &text, Scope::ClassifyPrompt);
                        Some(t)
                    }
                    Err(e) => {
                        self.err(at, format!("prompt file `{path}`: {e}"));
                        None
                    }
                }
            });
            let accept = self.threshold(&l.value.accept_above, at);
            if let Some(p) = &provider {
                let where_ = l
                    .value
                    .provider
                    .as_ref()
                    .map(|v| v.referenced)
                    .unwrap_or(at);
                self.provider_ref(p, where_);
            }
            let mut fallback = Vec::new();
            for f in l.value.fallback.iter().flat_map(|f| f.value.iter()) {
                if self.provider_ref(f.value.trim(), f.referenced) {
                    fallback.push(f.value.trim().to_string());
                }
            }
            let rate_limit = match &l.value.rate_limit {
                Some(r) => self
                    .positive(r, "rate_limit")
                    .map(|n| Some(u32::try_from(n).unwrap_or(u32::MAX))),
                None => Some(None),
            };
            let budget = match &l.value.budget {
                Some(b) => self.budget(b),
                None => Some(LlmBudget::default()),
            };
            let redact = l
                .value
                .redact
                .iter()
                .flat_map(|r| r.value.iter())
                .map(|r| r.value.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect();
            let cache_ttl = match &l.value.cache_ttl {
                Some(t) if t.value.0.trim() == "0" => Some(Duration::ZERO),
                Some(t) => self.duration(t, "cache_ttl"),
                None => Some(Duration::from_secs(7 * 24 * 3600)),
            };
            return Some(Stage::Llm(LlmStage {
                provider: provider?,
                prompt: prompt?,
                template: template?,
                accept_above: accept?,
                fallback,
                rate_limit: rate_limit?,
                budget: budget?,
                redact,
                cache_ttl: cache_ttl?,
            }));
        }
        None
    }

    /// Reports a provider name not declared in charter.yaml; `true` when it is known (or
    /// charter.yaml did not parse, so it cannot be checked).
    pub(crate) fn provider_ref(&mut self, name: &str, at: Location) -> bool {
        match self.providers {
            Some(known) if !known.contains(name) => {
                let expected = if known.is_empty() {
                    "no provider is declared; add one under `providers:` in charter.yaml"
                        .to_string()
                } else {
                    format!("expected one of {}", list(known.iter()))
                };
                self.err(
                    at,
                    format!("provider `{name}` is not declared in charter.yaml; {expected}"),
                );
                false
            }
            _ => true,
        }
    }

    pub(crate) fn budget(&mut self, raw: &S<RawBudget>) -> Option<LlmBudget> {
        let b = &raw.value;
        let tokens_per_day = match &b.tokens_per_day {
            Some(t) => self.positive(t, "tokens_per_day").map(|n| Some(n as u64)),
            None => Some(None),
        };
        let cost_per_day = match &b.cost_per_day {
            Some(c) if c.value > 0.0 && c.value.is_finite() => Some(Some(c.value)),
            Some(c) => {
                self.err(
                    c.referenced,
                    format!("`cost_per_day` is {}; expected an amount above 0", c.value),
                );
                None
            }
            None => Some(None),
        };
        let on_exhausted = match &b.on_exhausted {
            Some(o) => self.one_of(
                o,
                "on_exhausted",
                &[
                    ("wait", OnExhausted::Wait),
                    ("escalate", OnExhausted::Escalate),
                ],
            ),
            None => Some(OnExhausted::Escalate),
        };
        let max_wait = self.duration_or(&b.max_wait, "max_wait", Duration::from_secs(60));
        Some(LlmBudget {
            tokens_per_day: tokens_per_day?,
            cost_per_day: cost_per_day?,
            on_exhausted: on_exhausted?,
            max_wait,
        })
    }

    /// A required file path that must exist in the project.
    pub(crate) fn project_file(
        &mut self,
        v: &Option<S<String>>,
        at: Location,
        key: &str,
        what: &str,
    ) -> Option<String> {
        let path = self.required_text(v, at, key, what)?;
        let path = path.trim_start_matches("./").to_string();
        if !self.src.files.contains_key(&path) {
            let at = v.as_ref().map(|v| v.referenced).unwrap_or(at);
            self.err(
                at,
                format!("`{key}` file `{path}` does not exist in the project; expected {what}"),
            );
            return None;
        }
        Some(path)
    }

    pub(crate) fn threshold(&mut self, v: &Option<S<f64>>, at: Location) -> Option<f64> {
        match v {
            Some(t) if (0.0..=1.0).contains(&t.value) => Some(t.value),
            Some(t) => {
                self.err(
                    t.referenced,
                    format!(
                        "`accept_above` is {}; expected a confidence between 0 and 1, such as 0.85",
                        t.value
                    ),
                );
                None
            }
            None => {
                self.err(at, "missing `accept_above`: expected the confidence (0 to 1) above which this stage decides, such as 0.85");
                None
            }
        }
    }

    pub(crate) fn rule(&mut self, raw: S<RawRule>, known: &Known) -> Option<Rule> {
        let at = raw.referenced;
        let r: RawRule = raw.value;
        let when = self.expr(&r.when, at, "when", Scope::BeforeDecision);
        let label = match &r.label {
            Some(l) => self.label(l, known, "rule"),
            None => {
                self.err(
                    at,
                    "missing `label`: expected the label this rule decides, one of `decide.labels`",
                );
                None
            }
        };
        let mut fields = BTreeMap::new();
        let mut ok = true;
        for (name, value) in r.fields.unwrap_or_default().0 {
            let t = S::new(value.value.0, value.referenced, value.defined);
            match self.scoped_template(&t, &format!("fields.{}", name.value), Scope::BeforeDecision)
            {
                Some(t) => {
                    fields.insert(name.value, t);
                }
                None => ok = false,
            }
        }
        Some(Rule {
            when: when?,
            label: label?,
            fields: ok.then_some(fields)?,
        })
    }

    pub(crate) fn expr(
        &mut self,
        v: &Option<S<Scalar>>,
        at: Location,
        key: &str,
        scope: Scope,
    ) -> Option<Expr> {
        let Some(v) = v else {
            self.err(at, format!("missing `{key}`: expected a condition such as `decision.label == \"billing\"` (or `true`)"));
            return None;
        };
        match Expr::parse(&v.value.0) {
            Ok(e) => {
                let names = super::names::expr_names(&v.value.0);
                self.check_names(v.referenced, key, &v.value.0, &names, scope)
                    .then_some(e)
            }
            Err(e) => {
                self.err(v.referenced, format!("`{key}`: {e}"));
                None
            }
        }
    }
}
