//! The decision code's former home, kept so that `charter_server::decide::…` paths stay
//! valid: the cascade, drafts and context fetches live in [`crate::pipeline::decide`], the
//! LLM engine in [`crate::llm`].

pub use crate::llm::{
    LlmBacking, LlmRuntime, StoreCache, StoreLedger, llm_engine, memory_backing, store_backing,
};
pub use crate::pipeline::decide::{
    Assembled, DraftError, ask_llm_stage, assemble_context, complete_decision, decide_event,
    decide_event_or_wait, draft_for_action, run_cascade,
};
