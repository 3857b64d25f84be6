//! One line of documentation per key of `charter.yaml` and of a charter file: the source of
//! `docs/src/reference.md` and of the JSON Schemas' descriptions.

/// One line about each key of `charter.yaml`, by its path in
/// [`PROJECT_SHAPE`](super::shape::PROJECT_SHAPE) (`a.b` a key inside a mapping, `a.*.b` inside each named entry, `a[].b` inside each list item). The
/// reference (`docs/src/reference.md`) and the JSON Schemas are generated from the shapes and
/// these lines ([`super::schema`]); a test checks that every key has a line and every line a key.
pub const PROJECT_KEY_DOCS: &[(&str, &str)] = &[
    (
        "server",
        "The HTTP server: address, limits, exposure settings.",
    ),
    (
        "server.listen",
        "Address to listen on (default 127.0.0.1:8080; --listen / CHARTER_LISTEN win).",
    ),
    (
        "server.body_limit",
        "Largest webhook or API body (default 1MiB); larger ones get 413.",
    ),
    (
        "server.public_url",
        "The server's public base URL: links in notifications, HubSpot's signed URL, allowed Host and Origin.",
    ),
    (
        "server.timezone",
        "The web UI's clock: an IANA name (Europe/Paris) or a fixed offset (+05:30); default UTC.",
    ),
    (
        "server.allowed_hosts",
        "Host names answered besides loopback names and IP addresses (`*.example.com`, `*`).",
    ),
    (
        "server.trusted_proxies",
        "Addresses or CIDR ranges whose X-Forwarded-For names the client for the limiters.",
    ),
    (
        "server.insecure_open_admin",
        "true: serve the admin API and UI without tokens on a non-loopback address (logged as a warning).",
    ),
    (
        "server.header_timeout",
        "Deadline for a request head, also the idle keep-alive timeout (default 10s).",
    ),
    (
        "server.body_timeout",
        "Deadline for a whole request body (default 30s; 408 after it).",
    ),
    (
        "server.max_connections",
        "Connections served at once (default 4096); more wait in the listen backlog.",
    ),
    (
        "server.webhook_rate",
        "Webhook rate limit per path, all senders (`500/s`; default unlimited).",
    ),
    (
        "server.webhook_client_rate",
        "Webhook rate limit per path and client address (`50/s`; default unlimited).",
    ),
    (
        "server.rejected_keep",
        "Rejected payloads kept per charter (default 10000).",
    ),
    (
        "server.backlog",
        "Bounds on unprocessed events; beyond one, webhooks get 503 with Retry-After and poll sources pause.",
    ),
    (
        "server.backlog.max_events",
        "Events waiting for a worker, all charters together (default 1000000; 0 = unbounded).",
    ),
    (
        "server.backlog.max_per_charter",
        "Events waiting for a worker in one charter (default: max_events).",
    ),
    (
        "server.backlog.max_age",
        "Age of a charter's oldest waiting event beyond which it refuses more (`1h`; default off).",
    ),
    (
        "store",
        "The store: a SQLite file relative to the project (default charter.db) or a postgres:// URL.",
    ),
    ("worker", "The worker's settings; every one optional."),
    (
        "worker.lease",
        "How long a claim holds, renewed while the run is in flight (default 30s).",
    ),
    (
        "worker.poll_interval",
        "How often an idle worker looks for work (default 500ms; also woken on ingest).",
    ),
    (
        "worker.concurrency",
        "Runs at once on this node, across charters (default: unset, chosen by the worker from what its runs wait on, 4 to 1024).",
    ),
    (
        "worker.shutdown_grace",
        "How long SIGTERM lets in-flight runs finish (default 10s).",
    ),
    (
        "worker.alert_interval",
        "How often the charters' alerts are evaluated (default 15s).",
    ),
    (
        "worker.retention",
        "Purge finished work older than this, hourly (at least 1h; default off).",
    ),
    (
        "connectors",
        "Named, credentialed ways to reach a system; a charter may use those in its `uses`.",
    ),
    (
        "connectors.*.type",
        "The connector kind: http, slack, smtp or sql.",
    ),
    (
        "connectors.*.base_url",
        "http: the base URL that action paths are appended to.",
    ),
    (
        "connectors.*.headers",
        "http: headers sent with every request (a mapping of names to values).",
    ),
    (
        "connectors.*.auth",
        "http: one of bearer, basic, header, oauth2.",
    ),
    (
        "connectors.*.auth.bearer",
        "A bearer token (a secret reference: env:NAME or file:PATH).",
    ),
    ("connectors.*.auth.basic", "HTTP Basic authentication."),
    ("connectors.*.auth.basic.username", "The user name."),
    (
        "connectors.*.auth.basic.password",
        "The password (a secret reference).",
    ),
    (
        "connectors.*.auth.header",
        "An API key sent in a header of its own.",
    ),
    (
        "connectors.*.auth.header.name",
        "The header's name (X-Api-Key).",
    ),
    (
        "connectors.*.auth.header.value",
        "The header's value (a secret reference).",
    ),
    (
        "connectors.*.auth.oauth2",
        "OAuth2 client credentials; the token is cached and fetched again on 401.",
    ),
    ("connectors.*.auth.oauth2.token_url", "The token endpoint."),
    ("connectors.*.auth.oauth2.client_id", "The client id."),
    (
        "connectors.*.auth.oauth2.client_secret",
        "The client secret (a secret reference).",
    ),
    ("connectors.*.auth.oauth2.scope", "The scope asked for."),
    (
        "connectors.*.timeout",
        "http: per-request timeout (default 10s).",
    ),
    (
        "connectors.*.allow_private",
        "true: allow loopback, private, link-local and metadata addresses (refused otherwise).",
    ),
    (
        "connectors.*.preset",
        "http: zendesk, hubspot, jira or rest_crm (headers, limits, breaker, auth check).",
    ),
    (
        "connectors.*.rate_limit",
        "Requests per node (`10/s`, `600/m`, `3600/h`).",
    ),
    ("connectors.*.concurrency", "Requests in flight per node."),
    (
        "connectors.*.circuit_breaker",
        "Stop calling after consecutive failed attempts.",
    ),
    (
        "connectors.*.circuit_breaker.failures",
        "Consecutive failed attempts that open the circuit.",
    ),
    (
        "connectors.*.circuit_breaker.cool_down",
        "How long the circuit stays open before one probe.",
    ),
    (
        "connectors.*.response_schema",
        "http: a JSON Schema file; a 2xx answer that does not match fails the attempt.",
    ),
    (
        "connectors.*.webhook_url",
        "slack: an incoming webhook URL (a secret reference).",
    ),
    (
        "connectors.*.token",
        "slack: a bot token for chat.postMessage (a secret reference).",
    ),
    (
        "connectors.*.signing_secret",
        "slack: the app's signing secret, verifies button presses.",
    ),
    (
        "connectors.*.users",
        "slack: Slack user id -> the token name they decide as (a reviewer name in open mode).",
    ),
    ("connectors.*.host", "smtp: the relay's host."),
    (
        "connectors.*.port",
        "smtp: the relay's port (default by tls: 587, 465 or 25).",
    ),
    (
        "connectors.*.tls",
        "smtp: starttls, tls or none (local relays only).",
    ),
    ("connectors.*.username", "smtp: the user name."),
    (
        "connectors.*.password",
        "smtp: the password (a secret reference).",
    ),
    (
        "connectors.*.from",
        "smtp: the sender (`Charter <charter@acme.example>`).",
    ),
    (
        "connectors.*.allowed_domains",
        "smtp: recipients must be in one of these domains or a subdomain (notifications too).",
    ),
    (
        "connectors.*.url",
        "sql: sqlite:PATH or postgres://… (or env:NAME when it holds a password).",
    ),
    (
        "tokens",
        "API tokens (admin API, UI, MCP); with none the API and UI are open, loopback only.",
    ),
    (
        "tokens[].name",
        "The token's name: the actor in the audit log and what `approval.reviewers` and Slack `users` name.",
    ),
    ("tokens[].role", "viewer, reviewer, admin or agent."),
    ("tokens[].secret", "The token itself (a secret reference)."),
    (
        "tokens[].charters",
        "The charters this token sees (default all).",
    ),
    (
        "providers",
        "Named LLM providers that `llm` stages and drafts use.",
    ),
    (
        "knowledge",
        "Approved knowledge sources by name, indexed in the store for `retrieve` context steps.",
    ),
    (
        "knowledge.*.owner",
        "Who answers for the source's content; gaps and stale documents are reported to them.",
    ),
    (
        "knowledge.*.folder",
        "A folder of the project holding Markdown, HTML or text files (read again at each refresh).",
    ),
    (
        "knowledge.*.url",
        "folder: the public URL of a document, `{path}` standing for its path without extension.",
    ),
    (
        "knowledge.*.connector",
        "An http connector the documents are read through (with `preset` or `list`).",
    ),
    (
        "knowledge.*.preset",
        "A known articles API: zendesk_help_center (/api/v2/help_center/articles.json).",
    ),
    (
        "knowledge.*.list",
        "A paginated JSON list of documents: where the items, their fields and the next page are.",
    ),
    (
        "knowledge.*.list.path",
        "The first page's path under the connector.",
    ),
    (
        "knowledge.*.list.items",
        "JSON pointer to the array of documents in a page (such as /articles).",
    ),
    (
        "knowledge.*.list.next",
        "JSON pointer to the next page's URL or path (null or missing ends the list).",
    ),
    ("knowledge.*.list.id", "JSON pointer to a document's id."),
    (
        "knowledge.*.list.title",
        "JSON pointer to a document's title.",
    ),
    (
        "knowledge.*.list.body",
        "JSON pointer to a document's text.",
    ),
    (
        "knowledge.*.list.url",
        "JSON pointer to a document's public URL.",
    ),
    (
        "knowledge.*.list.updated_at",
        "JSON pointer to a document's last change (RFC 3339 or Unix seconds).",
    ),
    (
        "knowledge.*.list.format",
        "markdown, html or text (default html).",
    ),
    (
        "knowledge.*.list.max_pages",
        "Most pages read in one refresh (default 100).",
    ),
    (
        "knowledge.*.refresh",
        "How often the source is read again (default: only at start and on demand).",
    ),
    (
        "knowledge.*.max_age",
        "A best passage from a document last updated longer ago than this is a stale-knowledge gap.",
    ),
    (
        "knowledge.*.chunk_words",
        "Most words in one passage (default 120).",
    ),
    (
        "knowledge.*.on_gap",
        "connector:/path of an http connector that receives each knowledge gap as JSON (POST).",
    ),
    (
        "providers.*.type",
        "openai (any OpenAI-compatible server) or anthropic.",
    ),
    ("providers.*.base_url", "The API's base URL."),
    ("providers.*.api_key", "The API key (a secret reference)."),
    ("providers.*.model", "The model name."),
    (
        "providers.*.mode",
        "openai: json_schema, json_object (llama-cpp-python) or ollama.",
    ),
    ("providers.*.timeout", "Per-request timeout."),
    ("providers.*.max_retries", "Retries of a failed request."),
    ("providers.*.max_tokens", "Largest answer asked for."),
    (
        "providers.*.price",
        "Prices for the cost figures and budgets.",
    ),
    (
        "providers.*.price.input_per_mtok",
        "Price per million prompt tokens.",
    ),
    (
        "providers.*.price.output_per_mtok",
        "Price per million completion tokens.",
    ),
    (
        "providers.*.allow_private",
        "true: allow a loopback or private address (a local model server).",
    ),
    (
        "providers.*.circuit_breaker",
        "Stop calling a failing provider for a while (its fallback is asked at once): `{ failures, cool_down }`.",
    ),
    (
        "providers.*.circuit_breaker.failures",
        "Consecutive failures (unreachable, timeout, 5xx, unreadable) that open the breaker (default 5).",
    ),
    (
        "providers.*.circuit_breaker.cool_down",
        "How long an open breaker refuses before one probe is let through (default 30s).",
    ),
    (
        "providers.*.api_version",
        "Azure OpenAI: sent as ?api-version=, the key as an api-key header.",
    ),
];

/// One line about each key of a charter file, by its path in
/// [`CHARTER_SHAPE`](super::shape::CHARTER_SHAPE) (notation as in [`PROJECT_KEY_DOCS`]).
pub const CHARTER_KEY_DOCS: &[(&str, &str)] = &[
    (
        "name",
        "The charter's name, unique in the project (required).",
    ),
    ("description", "What the charter does."),
    ("owner", "Who is accountable for it (required)."),
    ("maintainer", "Who maintains it (required)."),
    (
        "system_of_record",
        "The system whose data it acts on (required).",
    ),
    (
        "mode",
        "shadow records what would run; live executes (an operator's promote overrides it).",
    ),
    ("uses", "The only connectors this charter may touch."),
    (
        "concurrency",
        "Runs of this charter processing at once, on all nodes together (default 4).",
    ),
    (
        "trigger",
        "Where events come from: webhook, nats, poll or schedule.",
    ),
    (
        "trigger.webhook",
        "Events are POSTed to a path of the server.",
    ),
    ("trigger.webhook.path", "The path (/hooks/...)."),
    (
        "trigger.webhook.verify",
        "The signature check: a mapping, or `none` written out.",
    ),
    (
        "trigger.webhook.verify.preset",
        "standard-webhooks, stripe, github, slack, shopify, zendesk, hubspot-v3 or hmac.",
    ),
    (
        "trigger.webhook.verify.secret",
        "The signing secret (a secret reference).",
    ),
    (
        "trigger.webhook.verify.secrets",
        "Several secrets, for rotation.",
    ),
    (
        "trigger.webhook.verify.tolerance",
        "Timestamped schemes: the clock window (default 5m).",
    ),
    (
        "trigger.webhook.verify.header",
        "hmac: the signature header.",
    ),
    (
        "trigger.webhook.verify.algorithm",
        "hmac: sha1, sha256 or sha512.",
    ),
    ("trigger.webhook.verify.encoding", "hmac: hex or base64."),
    (
        "trigger.webhook.verify.prefix",
        "hmac: text before the signature (sha256=).",
    ),
    (
        "trigger.webhook.verify.timestamp_header",
        "hmac: the header carrying the timestamp.",
    ),
    (
        "trigger.webhook.verify.signed",
        "hmac: what is signed (`{timestamp}.{body}`).",
    ),
    (
        "trigger.nats",
        "Events are read from a NATS JetStream stream.",
    ),
    ("trigger.nats.url", "The server(s), comma-separated."),
    ("trigger.nats.stream", "The stream."),
    ("trigger.nats.subject", "The subject filter (orders.>)."),
    (
        "trigger.nats.durable",
        "The durable consumer (default `charter-<charter name>`).",
    ),
    (
        "trigger.nats.create_stream",
        "true: create the stream (file storage) when it is missing.",
    ),
    (
        "trigger.poll",
        "Events are read by polling an HTTP API through a connector.",
    ),
    ("trigger.poll.connector", "An http connector in `uses`."),
    (
        "trigger.poll.path",
        "The path under the connector's base URL; a template that sees `cursor`.",
    ),
    ("trigger.poll.every", "How often (default 60s)."),
    (
        "trigger.poll.items",
        "JSON pointer to the array of items (/ for the whole answer).",
    ),
    (
        "trigger.poll.key",
        "Each item's dedupe key: a template over `item` or a JSON pointer.",
    ),
    ("trigger.poll.cursor", "Where the next poll starts."),
    (
        "trigger.poll.cursor.next",
        "JSON pointer to a value in the response (page token, since).",
    ),
    (
        "trigger.poll.cursor.max",
        "JSON pointer to an item field whose largest value is kept.",
    ),
    ("trigger.poll.cursor.start", "The cursor's first value."),
    ("trigger.schedule", "Events fire on a cron schedule."),
    (
        "trigger.schedule.cron",
        "5 fields (minute hour day-of-month month day-of-week), 6 with seconds, or @daily and friends.",
    ),
    (
        "trigger.schedule.timezone",
        "The zone the fields are read in: IANA name or +HH:MM (default UTC).",
    ),
    (
        "trigger.dedupe",
        "The dedupe key: a template, or `{ header: NAME }` to take a request header's value.",
    ),
    (
        "trigger.dedupe.header",
        "The request header whose value is the dedupe key.",
    ),
    (
        "trigger.input_schema",
        "A JSON Schema file (the contract); violations are answered 422 and kept as rejected.",
    ),
    (
        "trigger.text",
        "A template giving the event's text: what the classifier, extractors and LLM read.",
    ),
    (
        "trigger.events",
        "Only these event types (names or prefixes ending in *); others are answered 200, not stored.",
    ),
    (
        "decide",
        "How a decision is reached: labels, stages, what happens otherwise, fields.",
    ),
    ("decide.labels", "The labels a decision may have."),
    (
        "decide.stages",
        "Stages consulted in order until one decides.",
    ),
    (
        "decide.stages[].rules",
        "CEL rules; the first that matches decides.",
    ),
    (
        "decide.stages[].rules[].when",
        "A CEL expression over payload, event, headers, context.",
    ),
    ("decide.stages[].rules[].label", "The label it decides."),
    (
        "decide.stages[].rules[].fields",
        "Field values it sets (templates).",
    ),
    (
        "decide.stages[].embedded",
        "The embedded classifier, trained on an examples file.",
    ),
    (
        "decide.stages[].embedded.examples",
        "A CSV file `text,label`.",
    ),
    (
        "decide.stages[].embedded.accept_above",
        "The confidence it must reach to decide.",
    ),
    (
        "decide.stages[].llm",
        "An LLM through a provider of charter.yaml.",
    ),
    ("decide.stages[].llm.provider", "The provider's name."),
    ("decide.stages[].llm.prompt", "The prompt file."),
    (
        "decide.stages[].llm.accept_above",
        "The confidence it must reach to decide.",
    ),
    (
        "decide.stages[].llm.fallback",
        "Providers tried when this one fails.",
    ),
    (
        "decide.stages[].llm.cache_ttl",
        "How long answers are cached in the store, keyed on the exact request sent (default 7d; 0 turns the cache off).",
    ),
    (
        "decide.stages[].llm.rate_limit",
        "Calls per minute, for the whole cluster.",
    ),
    (
        "decide.stages[].llm.budget",
        "A daily spend limit, for the whole cluster.",
    ),
    (
        "decide.stages[].llm.budget.tokens_per_day",
        "Tokens per UTC day.",
    ),
    (
        "decide.stages[].llm.budget.cost_per_day",
        "Cost per UTC day (from the provider's price).",
    ),
    (
        "decide.stages[].llm.budget.on_exhausted",
        "escalate or wait.",
    ),
    (
        "decide.stages[].llm.budget.max_wait",
        "With wait: how long at most.",
    ),
    (
        "decide.stages[].llm.redact",
        "Kinds of personal data masked before sending (email).",
    ),
    (
        "decide.otherwise",
        "When no stage decides: escalate (a human decides) or a default label.",
    ),
    ("decide.extract", "Fields the decision carries, by name."),
    (
        "decide.extract.*.type",
        "string, number, integer or boolean.",
    ),
    (
        "decide.extract.*.pattern",
        "A regular expression the value must match.",
    ),
    ("decide.extract.*.enum", "The values allowed."),
    (
        "decide.extract.*.required",
        "true: a missing or invalid value escalates the event.",
    ),
    (
        "decide.extract.*.regex",
        "Extractor: the first capture group over the text (or `in`).",
    ),
    (
        "decide.extract.*.in",
        "What `regex` reads instead of the text (payload.ticket.body).",
    ),
    (
        "decide.extract.*.template",
        "Extractor: a template's value.",
    ),
    (
        "routes",
        "Which actions run: the first route whose `when` matches.",
    ),
    (
        "routes[].when",
        "A CEL expression over payload, event, decision, headers, context.",
    ),
    ("routes[].do", "The actions to run, in order."),
    (
        "routes[].name",
        "The route's name, under which its mode and reviews are kept (default route-<n>).",
    ),
    (
        "routes[].mode",
        "shadow, approve (every action waits for a reviewer) or live; default the charter's.",
    ),
    (
        "routes[].sample",
        "Share of the route's runs queued for a reviewer (10% or 0.1; default 0).",
    ),
    (
        "routes[].promote_when",
        "When the route has earned promotion: the owner is told, the UI suggests it.",
    ),
    (
        "routes[].promote_when.agreement",
        "Agreement needed among reviewed samples (0.95 or 95%).",
    ),
    (
        "routes[].promote_when.reviewed",
        "Reviewed samples needed at least; also when agreement is first shown.",
    ),
    (
        "routes[].promote_when.auto",
        "true: promote without a human once met (default false: only suggest).",
    ),
    (
        "routes[].demote_when",
        "When a live route goes back to approve: its reviewed correction rate.",
    ),
    (
        "routes[].demote_when.corrections",
        "Correction rate above which the live route is demoted (10% or 0.1).",
    ),
    (
        "routes[].demote_when.reviewed",
        "Reviewed samples since it went live needed before demoting (default 20).",
    ),
    (
        "actions",
        "The allowlist of what this charter may do, by name.",
    ),
    (
        "actions.*.connector",
        "The connector it goes through (one in `uses`).",
    ),
    ("actions.*.request", "http: the request."),
    ("actions.*.request.method", "The method."),
    (
        "actions.*.request.path",
        "A path under the connector's base URL (a template).",
    ),
    ("actions.*.request.url", "A whole URL instead of a path."),
    ("actions.*.request.headers", "Headers (templates)."),
    (
        "actions.*.request.json",
        "The JSON body; string values are templates.",
    ),
    ("actions.*.request.timeout", "This request's timeout."),
    (
        "actions.*.log",
        "A log line (a template); no connector, no external effect.",
    ),
    ("actions.*.message", "slack: a message."),
    (
        "actions.*.message.channel",
        "The channel (required with a bot token).",
    ),
    ("actions.*.message.text", "The text (a template)."),
    ("actions.*.email", "smtp: an email."),
    ("actions.*.email.to", "Recipients (a template)."),
    ("actions.*.email.subject", "The subject (a template)."),
    ("actions.*.email.body", "The body (a template)."),
    ("actions.*.sql", "sql: a statement."),
    (
        "actions.*.sql.statement",
        "The statement exactly as written ($1, $2 placeholders; no templates).",
    ),
    (
        "actions.*.sql.params",
        "The values bound to $1, $2, … (templates; ~ binds NULL).",
    ),
    (
        "actions.*.mcp_skip_when",
        "MCP calls run this action even where no route's `when:` holds (default false).",
    ),
    (
        "actions.*.approval",
        "`auto`, or `{ reviewers, expires, on_expiry }` to wait for a human; every action without a draft must state it.",
    ),
    (
        "actions.*.approval.reviewers",
        "Token names that may approve (required, not empty); admin tokens may always approve.",
    ),
    (
        "actions.*.approval.expires",
        "How long the approval waits (default 24h).",
    ),
    (
        "actions.*.approval.on_expiry",
        "What happens then: escalate (default) or reject.",
    ),
    (
        "actions.*.retry",
        "Retries on network errors, 408, 429, 5xx.",
    ),
    ("actions.*.retry.attempts", "Attempts in all."),
    (
        "actions.*.retry.backoff",
        "The first wait (exponential, full jitter).",
    ),
    ("actions.*.retry.max_backoff", "The longest wait."),
    (
        "actions.*.measure",
        "A measurement recorded when the action succeeds.",
    ),
    (
        "actions.*.draft",
        "An LLM-written text the templates see as `draft`; reviewed by default.",
    ),
    ("actions.*.draft.prompt", "The prompt file."),
    ("actions.*.draft.provider", "The provider."),
    ("actions.*.draft.fallback", "Providers tried when it fails."),
    (
        "actions.*.draft.redact",
        "Kinds of personal data masked before sending.",
    ),
    (
        "actions.*.draft.cite",
        "A retrieve context whose passages the draft must cite as [1], [2]; a draft citing nothing or a passage not retrieved is refused.",
    ),
    (
        "actions.*.draft.cite_every_sentence",
        "With cite: refuse a draft with a sentence that cites nothing.",
    ),
    ("escalation", "Where escalations and approvals go."),
    (
        "escalation.to",
        "Who gets escalated work: a reviewer group or address, shown with each escalation.",
    ),
    (
        "escalation.notify",
        "Where new approvals and escalations are announced (slack:#channel, connector:/path, mail connector:recipients).",
    ),
    (
        "measure",
        "The charter's own measurements (`success: [names]`).",
    ),
    (
        "alerts",
        "Conditions that notify someone, one kind per item.",
    ),
    (
        "alerts[].error_rate",
        "Failed share of finished runs above a threshold.",
    ),
    ("alerts[].stuck", "Events waiting longer than older_than."),
    ("alerts[].budget_exhausted", "An LLM budget ran out."),
    ("alerts[].dead_letters", "Actions dead-lettered."),
    (
        "alerts[].*.above",
        "The threshold: 5% / 0.05 (error_rate) or a count (dead_letters).",
    ),
    ("alerts[].*.window", "The time window looked at."),
    ("alerts[].*.older_than", "stuck: the age."),
    ("alerts[].*.when", "stuck: a CEL filter over the payload."),
    (
        "alerts[].*.min_runs",
        "error_rate: runs needed before it can hold (default 1).",
    ),
    ("alerts[].*.notify", "connector or connector:/path."),
    (
        "context",
        "Records fetched before deciding, by name (`context.<name>`).",
    ),
    ("context.*.connector", "An http connector in `uses`."),
    ("context.*.get", "The path to GET (a template)."),
    ("context.*.timeout", "The fetch's timeout."),
    ("context.*.on_error", "continue (null) or retry."),
    (
        "context.*.retry_after",
        "With retry: when to run the event again.",
    ),
    (
        "context.*.retrieve",
        "Passages from knowledge sources instead of a fetched record (`context.<name>.passages`).",
    ),
    (
        "context.*.retrieve.query",
        "The question searched for (a template over payload, event, headers).",
    ),
    ("context.*.retrieve.sources", "Knowledge source names."),
    (
        "context.*.retrieve.top_k",
        "Most passages kept (default 4).",
    ),
    (
        "context.*.retrieve.min_score",
        "Share of the question's terms a passage must contain, 0 to 1 (default 0.3); none above it is a gap.",
    ),
];
