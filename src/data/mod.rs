//! Dataset builders (`freshen data ...`): real retrieval sets made from local files, the
//! same sets grown with distractors, and synthetic sets for time and memory at any size.

pub mod distractors;
pub mod rlm;
pub mod synthetic;
mod tables;
pub mod wordnet;
