//! The keys every mapping of the format accepts ([`Shape`]), mirroring the `Raw*` structs
//! (a test keeps the two in step). [`super::unknown_keys`] walks the YAML against them and
//! [`super::schema`] generates the reference and the JSON Schemas from them.

/// The keys a mapping accepts, mirroring the `Raw*` structs (a test keeps the two in step).
///
/// serde stops at the first unknown key, which would hide every other problem of the file.
/// [`strip_unknown_keys`](super::unknown_keys::strip_unknown_keys) therefore walks the YAML
/// against these shapes first, reports every unknown key and blanks it out, so that the
/// structs see only keys they know.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Not checked here: scalars, free-form values (`json:`), mappings of header names.
    Any,
    /// A struct: its keys, each with the shape of its value. Only applies to mappings; a
    /// word in its place (`approval: auto`) is left to the deserializer.
    Keys(&'static [(&'static str, Shape)]),
    /// A mapping of names chosen by the author (connectors, actions) to values of one shape.
    Names(&'static Shape),
    /// A list of values of one shape.
    List(&'static Shape),
}

const A: Shape = Shape::Any;

/// `charter.yaml` ([`RawProject`](super::raw::RawProject)).
pub const PROJECT_SHAPE: Shape = Shape::Keys(&[
    ("server", SERVER_SHAPE),
    ("store", A),
    ("worker", WORKER_SHAPE),
    ("connectors", Shape::Names(&CONNECTOR_SHAPE)),
    ("tokens", Shape::List(&TOKEN_SHAPE)),
    ("providers", Shape::Names(&PROVIDER_SHAPE)),
    ("knowledge", Shape::Names(&KNOWLEDGE_SHAPE)),
]);

const KNOWLEDGE_SHAPE: Shape = Shape::Keys(&[
    ("owner", A),
    ("folder", A),
    ("url", A),
    ("connector", A),
    ("preset", A),
    ("list", KNOWLEDGE_LIST_SHAPE),
    ("refresh", A),
    ("max_age", A),
    ("chunk_words", A),
    ("on_gap", A),
]);

const KNOWLEDGE_LIST_SHAPE: Shape = Shape::Keys(&[
    ("path", A),
    ("items", A),
    ("next", A),
    ("id", A),
    ("title", A),
    ("body", A),
    ("url", A),
    ("updated_at", A),
    ("format", A),
    ("max_pages", A),
]);

const PROVIDER_SHAPE: Shape = Shape::Keys(&[
    ("type", A),
    ("base_url", A),
    ("api_key", A),
    ("model", A),
    ("mode", A),
    ("timeout", A),
    ("max_retries", A),
    ("max_tokens", A),
    ("price", PRICE_SHAPE),
    ("allow_private", A),
    ("api_version", A),
    ("circuit_breaker", BREAKER_SHAPE),
]);

const PRICE_SHAPE: Shape = Shape::Keys(&[("input_per_mtok", A), ("output_per_mtok", A)]);

const SERVER_SHAPE: Shape = Shape::Keys(&[
    ("listen", A),
    ("body_limit", A),
    ("public_url", A),
    ("timezone", A),
    ("allowed_hosts", A),
    ("trusted_proxies", A),
    ("insecure_open_admin", A),
    ("header_timeout", A),
    ("body_timeout", A),
    ("max_connections", A),
    ("webhook_rate", A),
    ("webhook_client_rate", A),
    ("rejected_keep", A),
    ("backlog", BACKLOG_SHAPE),
]);

const BACKLOG_SHAPE: Shape =
    Shape::Keys(&[("max_events", A), ("max_per_charter", A), ("max_age", A)]);

const WORKER_SHAPE: Shape = Shape::Keys(&[
    ("lease", A),
    ("poll_interval", A),
    ("concurrency", A),
    ("shutdown_grace", A),
    ("alert_interval", A),
    ("retention", A),
]);

const CONNECTOR_SHAPE: Shape = Shape::Keys(&[
    ("type", A),
    ("base_url", A),
    ("headers", A),
    ("auth", AUTH_SHAPE),
    ("timeout", A),
    ("allow_private", A),
    ("preset", A),
    ("rate_limit", A),
    ("concurrency", A),
    ("circuit_breaker", BREAKER_SHAPE),
    ("response_schema", A),
    ("webhook_url", A),
    ("token", A),
    ("signing_secret", A),
    ("users", A),
    ("host", A),
    ("port", A),
    ("tls", A),
    ("username", A),
    ("password", A),
    ("from", A),
    ("allowed_domains", A),
    ("url", A),
]);

const BREAKER_SHAPE: Shape = Shape::Keys(&[("failures", A), ("cool_down", A)]);

const AUTH_SHAPE: Shape = Shape::Keys(&[
    ("bearer", A),
    ("basic", BASIC_AUTH_SHAPE),
    ("header", HEADER_AUTH_SHAPE),
    ("oauth2", OAUTH2_SHAPE),
]);

const OAUTH2_SHAPE: Shape = Shape::Keys(&[
    ("token_url", A),
    ("client_id", A),
    ("client_secret", A),
    ("scope", A),
]);

const BASIC_AUTH_SHAPE: Shape = Shape::Keys(&[("username", A), ("password", A)]);

const HEADER_AUTH_SHAPE: Shape = Shape::Keys(&[("name", A), ("value", A)]);

const TOKEN_SHAPE: Shape = Shape::Keys(&[("name", A), ("role", A), ("secret", A), ("charters", A)]);

/// A charter file ([`RawCharter`](super::raw::RawCharter)).
pub const CHARTER_SHAPE: Shape = Shape::Keys(&[
    ("name", A),
    ("description", A),
    ("owner", A),
    ("maintainer", A),
    ("system_of_record", A),
    ("mode", A),
    ("uses", A),
    ("concurrency", A),
    ("trigger", TRIGGER_SHAPE),
    ("decide", DECIDE_SHAPE),
    ("routes", Shape::List(&ROUTE_SHAPE)),
    ("actions", Shape::Names(&ACTION_SHAPE)),
    ("escalation", ESCALATION_SHAPE),
    ("measure", A),
    ("alerts", Shape::List(&ALERT_SHAPE)),
    ("context", Shape::Names(&CONTEXT_SHAPE)),
]);

const CONTEXT_SHAPE: Shape = Shape::Keys(&[
    ("connector", A),
    ("get", A),
    ("timeout", A),
    ("on_error", A),
    ("retry_after", A),
    ("retrieve", RETRIEVE_SHAPE),
]);

const RETRIEVE_SHAPE: Shape =
    Shape::Keys(&[("query", A), ("sources", A), ("top_k", A), ("min_score", A)]);

const DRAFT_SHAPE: Shape = Shape::Keys(&[
    ("prompt", A),
    ("provider", A),
    ("fallback", A),
    ("redact", A),
    ("cite", A),
    ("cite_every_sentence", A),
]);

const ALERT_SHAPE: Shape = Shape::Keys(&[
    ("error_rate", ALERT_SPEC_SHAPE),
    ("stuck", ALERT_SPEC_SHAPE),
    ("budget_exhausted", ALERT_SPEC_SHAPE),
    ("dead_letters", ALERT_SPEC_SHAPE),
]);

const ALERT_SPEC_SHAPE: Shape = Shape::Keys(&[
    ("above", A),
    ("window", A),
    ("older_than", A),
    ("when", A),
    ("min_runs", A),
    ("notify", A),
]);

const TRIGGER_SHAPE: Shape = Shape::Keys(&[
    ("webhook", WEBHOOK_SHAPE),
    ("nats", NATS_SHAPE),
    ("poll", POLL_SHAPE),
    ("schedule", SCHEDULE_SHAPE),
    ("dedupe", DEDUPE_SHAPE),
    ("input_schema", A),
    ("text", A),
    ("events", A),
]);

const NATS_SHAPE: Shape = Shape::Keys(&[
    ("url", A),
    ("stream", A),
    ("subject", A),
    ("durable", A),
    ("create_stream", A),
]);

const POLL_SHAPE: Shape = Shape::Keys(&[
    ("connector", A),
    ("path", A),
    ("every", A),
    ("items", A),
    ("key", A),
    ("cursor", POLL_CURSOR_SHAPE),
]);

const POLL_CURSOR_SHAPE: Shape = Shape::Keys(&[("next", A), ("max", A), ("start", A)]);

const SCHEDULE_SHAPE: Shape = Shape::Keys(&[("cron", A), ("timezone", A)]);

const DEDUPE_SHAPE: Shape = Shape::Keys(&[("header", A)]);

const WEBHOOK_SHAPE: Shape = Shape::Keys(&[("path", A), ("verify", VERIFY_SHAPE)]);

const VERIFY_SHAPE: Shape = Shape::Keys(&[
    ("preset", A),
    ("secret", A),
    ("secrets", A),
    ("tolerance", A),
    ("header", A),
    ("algorithm", A),
    ("encoding", A),
    ("prefix", A),
    ("timestamp_header", A),
    ("signed", A),
]);

const DECIDE_SHAPE: Shape = Shape::Keys(&[
    ("labels", A),
    ("stages", Shape::List(&STAGE_SHAPE)),
    ("otherwise", A),
    ("extract", Shape::Names(&FIELD_SHAPE)),
]);

const STAGE_SHAPE: Shape = Shape::Keys(&[
    ("rules", Shape::List(&RULE_SHAPE)),
    ("embedded", EMBEDDED_SHAPE),
    ("llm", LLM_SHAPE),
]);

const RULE_SHAPE: Shape = Shape::Keys(&[("when", A), ("label", A), ("fields", A)]);

const EMBEDDED_SHAPE: Shape = Shape::Keys(&[("examples", A), ("accept_above", A)]);

const LLM_SHAPE: Shape = Shape::Keys(&[
    ("provider", A),
    ("prompt", A),
    ("accept_above", A),
    ("fallback", A),
    ("rate_limit", A),
    ("budget", BUDGET_SHAPE),
    ("redact", A),
    ("cache_ttl", A),
]);

const BUDGET_SHAPE: Shape = Shape::Keys(&[
    ("tokens_per_day", A),
    ("cost_per_day", A),
    ("on_exhausted", A),
    ("max_wait", A),
]);

const FIELD_SHAPE: Shape = Shape::Keys(&[
    ("type", A),
    ("pattern", A),
    ("enum", A),
    ("required", A),
    ("regex", A),
    ("in", A),
    ("template", A),
]);

const ROUTE_SHAPE: Shape = Shape::Keys(&[
    ("name", A),
    ("when", A),
    ("do", A),
    ("mode", A),
    ("sample", A),
    (
        "promote_when",
        Shape::Keys(&[("agreement", A), ("reviewed", A), ("auto", A)]),
    ),
    (
        "demote_when",
        Shape::Keys(&[("corrections", A), ("reviewed", A)]),
    ),
]);

const ACTION_SHAPE: Shape = Shape::Keys(&[
    ("connector", A),
    ("request", REQUEST_SHAPE),
    ("log", A),
    ("message", MESSAGE_SHAPE),
    ("email", EMAIL_SHAPE),
    ("sql", SQL_SHAPE),
    ("approval", APPROVAL_SHAPE),
    ("retry", RETRY_SHAPE),
    ("measure", A),
    ("draft", DRAFT_SHAPE),
    ("mcp_skip_when", A),
]);

const REQUEST_SHAPE: Shape = Shape::Keys(&[
    ("method", A),
    ("path", A),
    ("url", A),
    ("headers", A),
    ("json", A),
    ("timeout", A),
]);

const MESSAGE_SHAPE: Shape = Shape::Keys(&[("channel", A), ("text", A)]);

const EMAIL_SHAPE: Shape = Shape::Keys(&[("to", A), ("subject", A), ("body", A)]);

const SQL_SHAPE: Shape = Shape::Keys(&[("statement", A), ("params", A)]);

const APPROVAL_SHAPE: Shape = Shape::Keys(&[("reviewers", A), ("expires", A), ("on_expiry", A)]);

const RETRY_SHAPE: Shape = Shape::Keys(&[("attempts", A), ("backoff", A), ("max_backoff", A)]);

const ESCALATION_SHAPE: Shape = Shape::Keys(&[("to", A), ("notify", A)]);

#[cfg(test)]
mod tests;
