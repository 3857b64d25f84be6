//! The YAML formats as written: `charter.yaml` and `charters/*.yaml`.
//!
//! The `Raw*` structs live with their component (`config::components::*`) and are
//! re-exported here, next to the wrappers they share ([`Entries`], [`Scalar`], [`WordOr`],
//! [`OneOrList`]). Every struct denies unknown fields, and nearly every field is optional
//! even when the format requires it: serde stops at its first error, so required fields are
//! checked by the components' checks, which report all missing ones at once. For the same
//! reason unknown keys are found before deserializing, by [`strip_unknown_keys`] walking the
//! YAML against [`Shape`]s that mirror these structs. Values that a message may point at are
//! wrapped in [`Spanned`] to keep their line and column.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
pub use serde_saphyr::{Location, Spanned};

pub use super::components::actions::effects::{RawEmail, RawMessage, RawRequest, RawSql};
pub use super::components::actions::{RawAction, RawApproval, RawEscalation, RawRetry};
pub use super::components::alerts::{RawAlert, RawAlertSpec};
pub use super::components::backlog::RawBacklog;
pub use super::components::charter::{MeasureGroups, RawCharter};
pub use super::components::connectors::http::{RawAuth, RawBasicAuth, RawHeaderAuth, RawOAuth2};
pub use super::components::connectors::{RawBreaker, RawConnector};
pub use super::components::decide::{RawBudget, RawDecide, RawEmbedded, RawLlm, RawRule, RawStage};
pub use super::components::decision::{RawContextFetch, RawDraft, RawField};
pub use super::components::knowledge::{RawKnowledge, RawKnowledgeList, RawRetrieve};
pub use super::components::project::RawProject;
pub use super::components::providers::{RawPrice, RawProvider};
pub use super::components::rollout::{RawDemoteWhen, RawPromoteWhen};
pub use super::components::routes::RawRoute;
pub use super::components::server::{RawServer, RawWorker};
pub use super::components::sources::{RawPoll, RawPollCursor, RawSchedule};
pub use super::components::tokens::RawToken;
pub use super::components::triggers::{RawDedupe, RawNats, RawTrigger, RawWebhook};
pub use super::components::webhook_verify::RawVerify;
pub use super::key_docs::{CHARTER_KEY_DOCS, PROJECT_KEY_DOCS};
pub use super::shape::{CHARTER_SHAPE, PROJECT_SHAPE, Shape};
pub use super::unknown_keys::{Stripped, UnknownKey, strip_unknown_keys};

/// A value with the place it was written.
pub type S<T> = Spanned<T>;

/// A mapping kept in file order, with the location of every key.
#[derive(Debug, Clone)]
pub struct Entries<V>(pub Vec<(S<String>, V)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<S<String>>()? {
                    let value = map.next_value::<V>()?;
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Entries(Vec::new()))
            }
        }

        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// Any scalar (string, number, boolean) kept as the text it denotes: sizes (`1048576` or
/// `1MiB`), durations, header values and expressions (`when: true`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a single value (text, number or true/false)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A value written either as one word (`approval: auto`, `verify: none`, a dedupe template)
/// or as a mapping.
#[derive(Debug, Clone)]
pub enum WordOr<M> {
    Word(String),
    Map(M),
}

impl<'de, M: Deserialize<'de>> Deserialize<'de> for WordOr<M> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WordOrVisitor<M>(PhantomData<M>);

        impl<'de, M: Deserialize<'de>> Visitor<'de> for WordOrVisitor<M> {
            type Value = WordOr<M>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a word or a mapping")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WordOr::Word(v.to_string()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(WordOr::Word(v.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                M::deserialize(de::value::MapAccessDeserializer::new(map)).map(WordOr::Map)
            }
        }

        deserializer.deserialize_any(WordOrVisitor(PhantomData))
    }
}

/// One text or a list of texts (`notify: slack:#ops` or `notify: [slack:#ops, mail:a@b.example]`).
/// A single text takes its location from the enclosing [`Spanned`].
#[derive(Debug, Clone)]
pub enum OneOrList {
    One(String),
    List(Vec<S<String>>),
}

impl<'de> Deserialize<'de> for OneOrList {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrListVisitor;

        impl<'de> Visitor<'de> for OneOrListVisitor {
            type Value = OneOrList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text or a list of texts")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrList, E> {
                Ok(OneOrList::One(v.to_string()))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrList, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<S<String>>()? {
                    out.push(v);
                }
                Ok(OneOrList::List(out))
            }
        }

        deserializer.deserialize_any(OneOrListVisitor)
    }
}
