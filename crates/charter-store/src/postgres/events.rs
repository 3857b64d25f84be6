//! Events on PostgreSQL: ingest (through the group commit of [`super::ingest`]), reads,
//! listings and rejected payloads.

use charter_core::model::{EventRecord, NewEvent, RejectedPayload};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use super::PgStore;
use super::rows::{EVENT_COLS, db};
use super::{ingest, rows};
use crate::{EventFilter, EventStore, IngestOutcome, RejectedFilter, Result};

/// A JSON text passed to a `json`/`jsonb` parameter as it is (the caller parsed it already).
#[derive(Debug)]
pub(super) struct JsonText<'a>(pub(super) &'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        if *ty == tokio_postgres::types::Type::JSONB {
            // jsonb's binary format: a version byte, then the text.
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        matches!(
            *ty,
            tokio_postgres::types::Type::JSON | tokio_postgres::types::Type::JSONB
        )
    }

    tokio_postgres::types::to_sql_checked!();
}

impl EventStore for PgStore {
    async fn ingest(&self, event: NewEvent) -> Result<IngestOutcome> {
        ingest::ingest(self, event, None).await
    }

    async fn ingest_json(&self, event: NewEvent, payload_json: String) -> Result<IngestOutcome> {
        ingest::ingest(self, event, Some(payload_json)).await
    }

    async fn reject(&self, rejected: RejectedPayload) -> Result<()> {
        // The same insert as a capped one, with no cap.
        self.reject_within(rejected, u64::MAX).await.map(|_| ())
    }

    async fn reject_within(&self, rejected: RejectedPayload, keep: u64) -> Result<bool> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO rejected (id, charter, source, received_at, headers, body, reasons)
                 SELECT $1, $2, $3, $4, $5, $6, $7
                 WHERE (SELECT count(*) FROM rejected WHERE charter = $2) < $8
                 ON CONFLICT (id) DO NOTHING",
            )
            .await
            .map_err(db("preparing reject_within"))?;
        let n = client
            .execute(
                &stmt,
                &[
                    &rejected.id,
                    &rejected.charter,
                    &rejected.source,
                    &rejected.received_at,
                    &Json(&rejected.headers),
                    &rejected.body.as_bytes(),
                    &Json(&rejected.reasons),
                    &keep,
                ],
            )
            .await
            .map_err(db("inserting a rejected payload"))?;
        Ok(n == 1)
    }

    async fn get_event(&self, id: Uuid) -> Result<Option<EventRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {EVENT_COLS} FROM events WHERE id = $1"))
            .await
            .map_err(db("preparing get_event"))?;
        let row = client
            .query_opt(&stmt, &[&id])
            .await
            .map_err(db("querying an event"))?;
        row.as_ref().map(rows::event_record).transpose()
    }

    async fn list_events(&self, filter: EventFilter) -> Result<Vec<EventRecord>> {
        self.page_events(filter).await
    }

    async fn count_events(&self, filter: EventFilter) -> Result<u64> {
        self.count_events_matching(filter).await
    }

    async fn page_rejected(&self, filter: RejectedFilter) -> Result<Vec<RejectedPayload>> {
        self.page_rejected_matching(filter).await
    }

    async fn count_rejected(&self, filter: RejectedFilter) -> Result<u64> {
        self.count_rejected_matching(filter).await
    }

    async fn delete_rejected(&self, id: Uuid) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM rejected WHERE id = $1", &[&id])
            .await
            .map_err(db("deleting a rejected payload"))?;
        Ok(n > 0)
    }
}
