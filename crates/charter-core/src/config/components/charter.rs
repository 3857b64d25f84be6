//! A charter file as a whole: [`RawCharter`], the checker that walks it ([`CharterChecker`]),
//! `uses:`, `system_of_record:` and `measure:`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::diag::{Check, file_start, list, valid_name};
use crate::config::raw::{
    Entries, Location, RawAction, RawAlert, RawContextFetch, RawDecide, RawEscalation, RawRoute,
    RawTrigger, S,
};
use crate::config::{Charter, Diagnostic, Mode, ProjectSource};

/// `measure:` — group name to a list of measurement names.
pub type MeasureGroups = Entries<Option<S<Vec<S<String>>>>>;

/// One charter file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCharter {
    pub name: Option<S<String>>,
    pub description: Option<S<String>>,
    pub owner: Option<S<String>>,
    pub maintainer: Option<S<String>>,
    pub system_of_record: Option<S<String>>,
    pub mode: Option<S<String>>,
    pub uses: Option<S<Vec<S<String>>>>,
    pub concurrency: Option<S<i64>>,
    pub trigger: Option<S<RawTrigger>>,
    pub decide: Option<S<RawDecide>>,
    pub routes: Option<S<Vec<S<RawRoute>>>>,
    pub actions: Option<S<Entries<S<RawAction>>>>,
    pub escalation: Option<S<RawEscalation>>,
    pub measure: Option<S<MeasureGroups>>,
    pub alerts: Option<S<Vec<S<RawAlert>>>>,
    /// Records fetched from connectors before deciding, by name.
    pub context: Option<S<Entries<S<RawContextFetch>>>>,
}

/// Named outcome events, grouped (`success: [ticket_routed]`). At least one is required.
#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    pub groups: BTreeMap<String, Vec<String>>,
}

impl Measure {
    /// Every declared measurement name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.groups.values().flatten().map(String::as_str)
    }
}

/// An action template using `decision`: (action, place, key).
pub(crate) type ActionUse = (String, Location, String);

/// Checks one charter file, writing its problems into the project's diagnostics; the other
/// component modules add the checks of their sections as methods.
pub(crate) struct CharterChecker<'a> {
    pub(crate) file: &'a str,
    pub(crate) src: &'a ProjectSource,
    /// `None` when charter.yaml did not parse: connector references are then not checked.
    pub(crate) connectors: Option<&'a BTreeSet<String>>,
    /// Connector name -> `type:` as written; `None` when charter.yaml did not parse.
    pub(crate) connector_types: Option<&'a BTreeMap<String, String>>,
    /// Slack connectors with a bot `token:`; `None` when charter.yaml did not parse.
    pub(crate) slack_bots: Option<&'a BTreeSet<String>>,
    /// `None` when charter.yaml did not parse: provider references are then not checked.
    pub(crate) providers: Option<&'a BTreeSet<String>>,
    /// Knowledge source names; `None` when charter.yaml did not parse.
    pub(crate) knowledge: Option<&'a BTreeSet<String>>,
    /// charter.yaml's `server.public_url`; the outer `None` when charter.yaml did not parse.
    pub(crate) public_url: Option<Option<&'a str>>,
    pub(crate) diags: &'a mut Vec<Diagnostic>,
    /// Templates of the action being checked that use `decision` (place, key).
    pub(crate) decision_uses: Vec<(Location, String)>,
    /// Every action template of the charter that uses `decision`: (action, place, key). An
    /// MCP tool call runs the action without a decision.
    pub(crate) action_decision_uses: Vec<(String, Location, String)>,
    /// The names the charter's `context:` declares (`None` without `context:`): the only
    /// fields of `context` its templates and expressions may read.
    pub(crate) context_names: Option<BTreeSet<String>>,
    /// The names of the charter's `retrieve` context steps (what `draft.cite` may name).
    pub(crate) retrieve_names: BTreeSet<String>,
}

impl Check for CharterChecker<'_> {
    fn file(&self) -> &str {
        self.file
    }
    fn diags(&mut self) -> &mut Vec<Diagnostic> {
        self.diags
    }
}

/// What the rest of a charter's checks need to know about it.
#[derive(Default)]
pub(crate) struct Known {
    pub(crate) uses: BTreeSet<String>,
    pub(crate) labels: Option<BTreeSet<String>>,
    pub(crate) actions: BTreeSet<String>,
    pub(crate) measures: BTreeSet<String>,
}

impl CharterChecker<'_> {
    pub(crate) fn check(&mut self, raw: S<RawCharter>, text: &str) -> Option<Charter> {
        let top = if raw.referenced.line() == 0 {
            file_start()
        } else {
            raw.referenced
        };
        let c = raw.value;

        let name = self.charter_name(&c.name, top);
        let description = self.required_text(
            &c.description,
            top,
            "description",
            "one or two sentences saying what this charter does",
        );
        let owner = self.required_text(
            &c.owner,
            top,
            "owner",
            "the person or team accountable for this workflow, such as `ops-lead@acme.example`",
        );
        let maintainer = self.required_text(
            &c.maintainer,
            top,
            "maintainer",
            "who maintains this charter's configuration, such as `integrations@acme.example`",
        );
        let mode = match &c.mode {
            Some(m) => self.one_of(m, "mode", &[("shadow", Mode::Shadow), ("live", Mode::Live)]),
            None => self.missing(
                top,
                    "missing `mode`: expected `shadow` (decide and record only) or `live` (execute actions)",
            )
        };
        let concurrency = match &c.concurrency {
            Some(n) => self.positive(n, "concurrency"),
            None => Some(4),
        };

        let mut known = Known::default();
        let uses = self.uses(&c.uses, top, &mut known);
        let system_of_record = self.system_of_record(&c.system_of_record, top, &known);

        // Names declared further down are needed by earlier sections.
        self.declared_names(&c, &mut known);

        let trigger = match c.trigger {
            Some(t) => self.trigger(t, name.as_deref(), &known),
            None => self.missing(
                top,
                "missing `trigger`: expected where events come from, such as \
                     `trigger: { webhook: { path: /hooks/x, verify: ... } }`",
            ),
        };
        let decide = match c.decide {
            Some(d) => self.decide(d, &known).map(Some),
            None => Some(None),
        };
        let routes = match c.routes {
            Some(r) => self.routes(r, &known),
            None => self.missing(
                top,
                "missing `routes`: expected at least one `- when: <condition>` with `do: [action, ...]`",
            ),
        };
        let actions = match c.actions {
            Some(a) => self.actions(a, &known),
            None => self.missing(
                top,
                "missing `actions`: expected the allowlist of actions this charter may take",
            ),
        };
        let escalation = self.escalation(c.escalation, top, &known);
        let measure = match c.measure {
            Some(m) => self.measure(m),
            None => self.missing(
                top,
                "missing `measure`: expected at least one named outcome, such as \
                     `measure: { success: [ticket_routed] }`",
            ),
        };

        let alerts = self.alerts(c.alerts);
        let context = self.context(c.context, &known);
        let (context, retrieve) = match context {
            Some((c, r)) => (Some(c), Some(r)),
            None => (None, None),
        };

        let digest = Sha256::digest(text.as_bytes());
        let version: String = hex::encode(digest).chars().take(16).collect();
        Some(Charter {
            name: name?,
            description: description?,
            owner: owner?,
            maintainer: maintainer?,
            system_of_record: system_of_record?,
            mode: mode?,
            uses: uses?,
            concurrency: concurrency?,
            trigger: trigger?,
            decide: decide?,
            routes: routes?,
            actions: actions?,
            escalation: escalation?,
            measure: measure?,
            alerts: alerts?,
            context: context?,
            retrieve: retrieve?,
            file: self.file.to_string(),
            version,
        })
    }

    /// Reports a missing required section at the top of the file.
    fn missing<T>(&mut self, top: Location, message: &str) -> Option<T> {
        self.err(top, message);
        None
    }

    /// `name:`, required and made of `[a-z0-9_-]`.
    fn charter_name(&mut self, raw: &Option<S<String>>, top: Location) -> Option<String> {
        match raw {
            Some(n) if !valid_name(&n.value) => {
                self.err(
                    n.referenced,
                    format!(
                        "charter name `{}` is not allowed; expected lower-case letters, digits, `-` and `_` (for example `support-triage`)",
                        n.value
                    ),
                );
                None
            }
            other => self.required_text(
                other,
                top,
                "name",
                "the charter's name, such as `support-triage`",
            ),
        }
    }

    /// The names later sections refer to before their own section is checked: measures,
    /// actions, context fields, retrieve steps and labels.
    fn declared_names(&mut self, c: &RawCharter, known: &mut Known) {
        if let Some(m) = &c.measure {
            for (_, names) in &m.value.0 {
                for n in names.iter().flat_map(|n| n.value.iter()) {
                    known.measures.insert(n.value.clone());
                }
            }
        }
        if let Some(a) = &c.actions {
            known.actions = a.value.0.iter().map(|(k, _)| k.value.clone()).collect();
        }
        self.context_names = c.context.as_ref().map(|ctx| {
            ctx.value
                .0
                .iter()
                .map(|(k, _)| k.value.trim().to_string())
                .collect()
        });
        self.retrieve_names = c
            .context
            .as_ref()
            .map(|ctx| {
                ctx.value
                    .0
                    .iter()
                    .filter(|(_, v)| v.value.retrieve.is_some())
                    .map(|(k, _)| k.value.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(d) = &c.decide
            && let Some(labels) = &d.value.labels
        {
            known.labels = Some(labels.value.iter().map(|l| l.value.clone()).collect());
        }
    }

    pub(crate) fn uses(
        &mut self,
        raw: &Option<S<Vec<S<String>>>>,
        top: Location,
        known: &mut Known,
    ) -> Option<Vec<String>> {
        let Some(uses) = raw else {
            self.err(
                top,
                "missing `uses`: expected the list of connectors this charter may touch, such as `uses: [helpdesk]`",
            );
            return None;
        };
        if uses.value.is_empty() {
            self.err(
                uses.referenced,
                "`uses` is empty; expected at least the connector named in `system_of_record`",
            );
            return None;
        }
        let mut ok = true;
        let mut out = Vec::new();
        for u in &uses.value {
            if let Some(connectors) = self.connectors
                && !connectors.contains(&u.value)
            {
                self.err(
                    u.referenced,
                    format!(
                        "connector `{}` is not defined in charter.yaml; expected one of {}",
                        u.value,
                        list(connectors.iter())
                    ),
                );
                ok = false;
            }
            known.uses.insert(u.value.clone());
            if !out.contains(&u.value) {
                out.push(u.value.clone());
            }
        }
        ok.then_some(out)
    }

    pub(crate) fn system_of_record(
        &mut self,
        raw: &Option<S<String>>,
        top: Location,
        known: &Known,
    ) -> Option<String> {
        let sor = self.required_text(
            raw,
            top,
            "system_of_record",
            "the connector that owns the record this charter works on",
        )?;
        if !known.uses.contains(&sor) {
            let at = raw.as_ref().map(|r| r.referenced).unwrap_or(top);
            self.err(
                at,
                format!(
                    "system_of_record `{sor}` is not in this charter's `uses` list; expected one of {}",
                    list(&known.uses)
                ),
            );
            return None;
        }
        Some(sor)
    }

    pub(crate) fn measure(&mut self, raw: S<MeasureGroups>) -> Option<Measure> {
        let mut groups = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut ok = true;
        for (group, names) in raw.value.0 {
            let mut out = Vec::new();
            for n in names.map(|n| n.value).unwrap_or_default() {
                if n.value.trim().is_empty() {
                    self.err(
                        n.referenced,
                        "measurement name is empty; expected a name such as `ticket_routed`",
                    );
                    ok = false;
                } else if !seen.insert(n.value.clone()) {
                    self.err(
                        n.referenced,
                        format!(
                            "measurement `{}` is declared twice; expected each name once",
                            n.value
                        ),
                    );
                    ok = false;
                } else {
                    out.push(n.value);
                }
            }
            groups.insert(group.value, out);
        }
        if seen.is_empty() && ok {
            self.err(raw.referenced, "`measure` declares no names; expected at least one, such as `success: [ticket_routed]`");
            return None;
        }
        ok.then_some(Measure { groups })
    }
}
