//! `charter.yaml` as a whole: [`RawProject`], and the checker that turns it into settings,
//! connectors, providers, tokens and knowledge sources ([`ProjectParts`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::config::diag::Check;
use crate::config::load::PROJECT_FILE;
use crate::config::raw::{
    Entries, Location, RawConnector, RawKnowledge, RawProvider, RawServer, RawToken, RawWorker, S,
};
use crate::config::{
    Connector, Diagnostic, KnowledgeSource, ProjectSource, ProviderDef, Settings, TokenDef,
};

/// `charter.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    pub server: Option<S<RawServer>>,
    pub store: Option<S<String>>,
    pub worker: Option<S<RawWorker>>,
    pub connectors: Option<S<Entries<S<RawConnector>>>>,
    pub tokens: Option<S<Vec<S<RawToken>>>>,
    pub providers: Option<S<Entries<S<RawProvider>>>>,
    /// Approved knowledge sources by name (`knowledge:`).
    pub knowledge: Option<S<Entries<S<RawKnowledge>>>>,
}

/// What `charter.yaml` yields (plus token scopes, checked once charters are known).
pub(crate) struct ProjectParts {
    pub(crate) settings: Settings,
    pub(crate) connectors: BTreeMap<String, Connector>,
    pub(crate) tokens: Vec<TokenDef>,
    pub(crate) token_scopes: Vec<(String, Location)>,
    /// Every connector name written, valid or not (so charters are not blamed for a broken
    /// connector definition).
    pub(crate) declared_connectors: BTreeSet<String>,
    /// The `type:` written for each connector (valid or not).
    pub(crate) connector_types: BTreeMap<String, String>,
    /// Slack connectors that post with a bot `token:` (chat.postMessage needs a channel).
    pub(crate) slack_bots: BTreeSet<String>,
    pub(crate) providers: BTreeMap<String, ProviderDef>,
    /// Every provider name written, valid or not.
    pub(crate) declared_providers: BTreeSet<String>,
    pub(crate) knowledge: BTreeMap<String, KnowledgeSource>,
    /// Every knowledge source name written, valid or not.
    pub(crate) declared_knowledge: BTreeSet<String>,
}

/// Checks `charter.yaml`, writing its problems into the project's diagnostics; the other
/// component modules add the checks of their sections as methods.
pub(crate) struct ProjectChecker<'a> {
    pub(crate) diags: &'a mut Vec<Diagnostic>,
    pub(crate) src: &'a ProjectSource,
    /// Token names written in `tokens:` (`None` when there are none), for Slack `users:`.
    pub(crate) token_names: Option<BTreeSet<String>>,
}

impl Check for ProjectChecker<'_> {
    fn file(&self) -> &str {
        PROJECT_FILE
    }
    fn diags(&mut self) -> &mut Vec<Diagnostic> {
        self.diags
    }
}

impl<'a> ProjectChecker<'a> {
    pub(crate) fn new(diags: &'a mut Vec<Diagnostic>, src: &'a ProjectSource) -> Self {
        ProjectChecker {
            diags,
            src,
            token_names: None,
        }
    }
}

impl ProjectChecker<'_> {
    pub(crate) fn check(mut self, raw: RawProject) -> ProjectParts {
        let settings = self.settings(&raw);
        self.token_names = raw
            .tokens
            .as_ref()
            .map(|t| {
                t.value
                    .iter()
                    .filter_map(|t| t.value.name.as_ref().map(|n| n.value.trim().to_string()))
                    .collect::<BTreeSet<_>>()
            })
            .filter(|names| !names.is_empty());
        let table = self.connectors(raw.connectors);
        let (tokens, token_scopes) = self.tokens(raw.tokens);
        let (providers, declared_providers) = self.providers(raw.providers);
        let declared_knowledge = raw
            .knowledge
            .as_ref()
            .map(|k| k.value.0.iter().map(|(n, _)| n.value.clone()).collect())
            .unwrap_or_default();
        let knowledge = self.knowledge_sources(raw.knowledge, &table.types);

        ProjectParts {
            settings,
            connectors: table.connectors,
            tokens,
            token_scopes,
            declared_connectors: table.declared,
            connector_types: table.types,
            slack_bots: table.slack_bots,
            providers,
            declared_providers,
            knowledge,
            declared_knowledge,
        }
    }
}
