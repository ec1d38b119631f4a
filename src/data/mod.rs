//! Dataset builders (`freshen data ...`): real retrieval sets made from local files.

pub mod wordnet;
