//! What a node publishes at planning for the nodes planned after it
//! ([`crate::graph::Facts`]): kept here, outside every node module, so that the node that
//! publishes and the node that reads need not import each other.

use crate::store::cache::EmbeddingStore;

/// What an `encode` node tells the nodes planned after it (its `cache`).
pub struct EncoderFacts {
    /// The store of the cache that reads it, if one does.
    pub store: Option<EmbeddingStore>,
}
