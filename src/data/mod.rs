//! Dataset builders (`freshen data ...`): real retrieval sets made from local files, the
//! same sets grown with distractors, a held-out split carved out of a set's train split,
//! and synthetic sets for time and memory at any size.

pub mod distractors;
pub mod rlm;
pub mod split;
pub mod synthetic;
mod tables;
pub mod wordnet;
