//! The application state every front end and the worker share: the prepared project, the
//! store, the worker's wake-up, the metrics, and the LLM engine (built at start, never a
//! global).

use std::sync::Arc;

use charter_connect::HttpExecutor;
use charter_store::Store;
use tokio::sync::Notify;

use crate::llm::{LlmRuntime, llm_engine, store_backing};
use crate::metrics::Metrics;
use crate::project::Runtime;

/// Shared state of the HTTP handlers and the worker.
pub struct AppState<S> {
    pub runtime: Arc<Runtime>,
    pub store: S,
    /// Woken when an event is stored or a charter resumed, so idle workers start at once.
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// The project's LLM providers behind one engine, with its response cache and limits'
    /// counts in the store (see [`crate::llm`]).
    pub llm: Arc<LlmRuntime>,
    /// The server's outbound HTTP client (actions, notifications, answers to Slack).
    pub executor: Arc<HttpExecutor>,
}

impl<S: Store + Clone> AppState<S> {
    /// The state of a server over `store` running `runtime`, sending through `executor`: a
    /// fresh wake-up and metrics, and the LLM engine built now from the project's providers.
    pub fn new(runtime: Arc<Runtime>, store: S, executor: Arc<HttpExecutor>) -> AppState<S> {
        let backing_store = store.clone();
        let llm = llm_engine(&runtime, move || store_backing(backing_store));
        AppState {
            runtime,
            store,
            wake: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::default()),
            llm,
            executor,
        }
    }
}

impl<S: Clone> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            runtime: self.runtime.clone(),
            store: self.store.clone(),
            wake: self.wake.clone(),
            metrics: self.metrics.clone(),
            llm: self.llm.clone(),
            executor: self.executor.clone(),
        }
    }
}
