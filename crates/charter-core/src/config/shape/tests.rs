//! The shapes against the `Raw*` structs: every struct shape lists exactly the fields serde
//! derives for its struct (renames applied), so unknown-key stripping and deserializing agree.

use serde::Deserialize;
use serde::de::{self, Visitor};

use super::*;
use crate::config::raw::*;

/// The field names serde's derive gives a struct (renames applied).
fn serde_fields<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
    struct Fields(Vec<&'static str>);

    impl<'de> de::Deserializer<'de> for &mut Fields {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only structs"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields.to_vec();
            Err(de::Error::custom("fields recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }

    let mut fields = Fields(Vec::new());
    let _ = T::deserialize(&mut fields);
    fields.0
}

fn shape_keys(shape: &Shape) -> Vec<&'static str> {
    match shape {
        Shape::Keys(fields) => fields.iter().map(|(name, _)| *name).collect(),
        other => panic!("not a struct shape: {other:?}"),
    }
}

/// The value shape of `key` in a struct shape.
fn field(shape: &Shape, key: &str) -> Shape {
    match shape {
        Shape::Keys(fields) => fields
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no key {key}")),
        other => panic!("not a struct shape: {other:?}"),
    }
}

fn inner(shape: Shape) -> Shape {
    match shape {
        Shape::Names(s) | Shape::List(s) => *s,
        other => panic!("not a collection shape: {other:?}"),
    }
}

/// Asserts that each `(what, shape keys, serde fields)` lists the same keys.
fn assert_same_keys(pairs: Vec<(&str, Vec<&str>, Vec<&str>)>) {
    for (what, shape, serde) in pairs {
        assert!(!serde.is_empty(), "{what}: serde fields not recorded");
        assert_eq!(shape, serde, "{what}");
    }
}

#[test]
fn project_shapes_list_exactly_the_struct_fields() {
    let p = PROJECT_SHAPE;
    let connector = inner(field(&p, "connectors"));
    let auth = field(&connector, "auth");
    assert_same_keys(vec![
        ("project", shape_keys(&p), serde_fields::<RawProject>()),
        (
            "server",
            shape_keys(&field(&p, "server")),
            serde_fields::<RawServer>(),
        ),
        (
            "worker",
            shape_keys(&field(&p, "worker")),
            serde_fields::<RawWorker>(),
        ),
        (
            "connector",
            shape_keys(&connector),
            serde_fields::<RawConnector>(),
        ),
        ("auth", shape_keys(&auth), serde_fields::<RawAuth>()),
        (
            "oauth2",
            shape_keys(&field(&auth, "oauth2")),
            serde_fields::<RawOAuth2>(),
        ),
        (
            "circuit_breaker",
            shape_keys(&field(&connector, "circuit_breaker")),
            serde_fields::<RawBreaker>(),
        ),
        (
            "basic",
            shape_keys(&field(&auth, "basic")),
            serde_fields::<RawBasicAuth>(),
        ),
        (
            "header auth",
            shape_keys(&field(&auth, "header")),
            serde_fields::<RawHeaderAuth>(),
        ),
        (
            "token",
            shape_keys(&inner(field(&p, "tokens"))),
            serde_fields::<RawToken>(),
        ),
        (
            "provider",
            shape_keys(&inner(field(&p, "providers"))),
            serde_fields::<RawProvider>(),
        ),
        (
            "price",
            shape_keys(&field(&inner(field(&p, "providers")), "price")),
            serde_fields::<RawPrice>(),
        ),
        (
            "knowledge",
            shape_keys(&inner(field(&p, "knowledge"))),
            serde_fields::<RawKnowledge>(),
        ),
        (
            "knowledge list",
            shape_keys(&field(&inner(field(&p, "knowledge")), "list")),
            serde_fields::<RawKnowledgeList>(),
        ),
    ]);
}

#[test]
fn charter_trigger_and_decide_shapes_list_exactly_the_struct_fields() {
    let c = CHARTER_SHAPE;
    let trigger = field(&c, "trigger");
    let webhook = field(&trigger, "webhook");
    let decide = field(&c, "decide");
    let stage = inner(field(&decide, "stages"));
    assert_same_keys(vec![
        (
            "budget",
            shape_keys(&field(&field(&stage, "llm"), "budget")),
            serde_fields::<RawBudget>(),
        ),
        ("charter", shape_keys(&c), serde_fields::<RawCharter>()),
        (
            "trigger",
            shape_keys(&trigger),
            serde_fields::<RawTrigger>(),
        ),
        (
            "dedupe",
            shape_keys(&field(&trigger, "dedupe")),
            serde_fields::<RawDedupe>(),
        ),
        (
            "webhook",
            shape_keys(&webhook),
            serde_fields::<RawWebhook>(),
        ),
        (
            "nats",
            shape_keys(&field(&trigger, "nats")),
            serde_fields::<RawNats>(),
        ),
        (
            "poll",
            shape_keys(&field(&trigger, "poll")),
            serde_fields::<RawPoll>(),
        ),
        (
            "poll cursor",
            shape_keys(&field(&field(&trigger, "poll"), "cursor")),
            serde_fields::<RawPollCursor>(),
        ),
        (
            "schedule",
            shape_keys(&field(&trigger, "schedule")),
            serde_fields::<RawSchedule>(),
        ),
        (
            "verify",
            shape_keys(&field(&webhook, "verify")),
            serde_fields::<RawVerify>(),
        ),
        ("decide", shape_keys(&decide), serde_fields::<RawDecide>()),
        ("stage", shape_keys(&stage), serde_fields::<RawStage>()),
        (
            "rule",
            shape_keys(&inner(field(&stage, "rules"))),
            serde_fields::<RawRule>(),
        ),
        (
            "embedded",
            shape_keys(&field(&stage, "embedded")),
            serde_fields::<RawEmbedded>(),
        ),
        (
            "llm",
            shape_keys(&field(&stage, "llm")),
            serde_fields::<RawLlm>(),
        ),
        (
            "field",
            shape_keys(&inner(field(&decide, "extract"))),
            serde_fields::<RawField>(),
        ),
    ]);
}

#[test]
fn charter_route_action_and_context_shapes_list_exactly_the_struct_fields() {
    let c = CHARTER_SHAPE;
    let action = inner(field(&c, "actions"));
    assert_same_keys(vec![
        (
            "route",
            shape_keys(&inner(field(&c, "routes"))),
            serde_fields::<RawRoute>(),
        ),
        (
            "promote_when",
            shape_keys(&field(&inner(field(&c, "routes")), "promote_when")),
            serde_fields::<RawPromoteWhen>(),
        ),
        (
            "demote_when",
            shape_keys(&field(&inner(field(&c, "routes")), "demote_when")),
            serde_fields::<RawDemoteWhen>(),
        ),
        ("action", shape_keys(&action), serde_fields::<RawAction>()),
        (
            "draft",
            shape_keys(&field(&action, "draft")),
            serde_fields::<RawDraft>(),
        ),
        (
            "context",
            shape_keys(&inner(field(&c, "context"))),
            serde_fields::<RawContextFetch>(),
        ),
        (
            "retrieve",
            shape_keys(&field(&inner(field(&c, "context")), "retrieve")),
            serde_fields::<RawRetrieve>(),
        ),
        (
            "message",
            shape_keys(&field(&action, "message")),
            serde_fields::<RawMessage>(),
        ),
        (
            "email",
            shape_keys(&field(&action, "email")),
            serde_fields::<RawEmail>(),
        ),
        (
            "sql",
            shape_keys(&field(&action, "sql")),
            serde_fields::<RawSql>(),
        ),
        (
            "request",
            shape_keys(&field(&action, "request")),
            serde_fields::<RawRequest>(),
        ),
        (
            "approval",
            shape_keys(&field(&action, "approval")),
            serde_fields::<RawApproval>(),
        ),
        (
            "retry",
            shape_keys(&field(&action, "retry")),
            serde_fields::<RawRetry>(),
        ),
        (
            "escalation",
            shape_keys(&field(&c, "escalation")),
            serde_fields::<RawEscalation>(),
        ),
    ]);
}
