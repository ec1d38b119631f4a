//! Word pieces and batches: the tokenizer with the folder's fixed padding and truncation
//! overridden, and batches formed by a token budget over inputs sorted by length.
//!
//! MiniLM's `tokenizer.json` pads every input to 128 tokens and truncates at 128. Padding
//! to a fixed length multiplies the work of short texts (WordNet glosses are ~20 tokens)
//! and truncating at 128 differs from sentence-transformers (which cuts at
//! `max_seq_length`, 256). So padding is switched off here (batches are padded to their
//! own longest input) and truncation is set to the encoder's `max_length`.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::config::file_err;
use super::model::TokenBatch;
use crate::Result;

/// A tokenizer that yields unpadded, truncated word-piece ids with special tokens.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    max_length: usize,
}

impl TextTokenizer {
    /// Loads `path` (a `tokenizer.json`) and truncates at `max_length` tokens.
    pub fn load(path: &Path, max_length: usize) -> Result<Self> {
        if !path.exists() {
            return Err(file_err(
                path,
                "missing (every model folder needs its tokenizer.json)",
            ));
        }
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| file_err(path, format!("cannot load tokenizer: {e}")))?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .unwrap_or(0);
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| file_err(path, format!("cannot set truncation: {e}")))?;
        Ok(Self {
            inner,
            pad_id,
            max_length,
        })
    }

    /// The longest input kept, in tokens (special tokens included).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Word-piece ids of each text, with `[CLS]`/`[SEP]`, truncated.
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let enc = self
            .inner
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| crate::Error::Setting(format!("tokenizer: {e}")))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// The padding id (`[PAD]`).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
}

/// Groups inputs into batches: sorted by length, longest first, each batch as many inputs
/// as fit `budget` tokens once padded to its longest (and at most `max_batch`). Returns the
/// input indices of each batch.
///
/// Sorting makes neighbours nearly equal in length, so little padding is computed; the
/// budget keeps the attention matrices of long inputs from blowing up memory while letting
/// short inputs form large, efficient batches. A batch the budget closes keeps a multiple
/// of `parts` inputs when it has more than `parts` (the rest open the next batch): the CPU
/// cuts a batch into that many parts of whole texts, one a thread, and an odd count left
/// one thread idle at the end of the batch.
pub fn plan_batches(
    lengths: &[usize],
    budget: usize,
    max_batch: usize,
    parts: usize,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable: equal lengths keep input order (deterministic batches).
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let len = lengths[i].max(1);
        let width = longest.max(len);
        if !current.is_empty() && current.len() >= max_batch.max(1) {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        } else if !current.is_empty() && (current.len() + 1) * width > budget {
            let keep = match current.len() > parts && parts > 1 {
                true => current.len() / parts * parts,
                false => current.len(),
            };
            // The carried inputs fitted with more beside them: with one more they still fit.
            let carry = current.split_off(keep);
            batches.push(std::mem::replace(&mut current, carry));
            longest = current
                .iter()
                .map(|&j| lengths[j].max(1))
                .max()
                .unwrap_or(0);
        }
        longest = longest.max(len);
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Pads the id lists of one batch to their longest into `(b, t)` ids and mask tensors.
pub fn pad_batch(ids: &[&[u32]], pad_id: u32, device: &Device) -> Result<TokenBatch> {
    let t = ids.iter().map(|i| i.len()).max().unwrap_or(0).max(1);
    let b = ids.len();
    let mut flat = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t);
    for row in ids {
        flat.extend_from_slice(row);
        flat.extend(std::iter::repeat_n(pad_id, t - row.len()));
        mask.extend(std::iter::repeat_n(1f32, row.len()));
        mask.extend(std::iter::repeat_n(0f32, t - row.len()));
    }
    Ok(TokenBatch {
        ids: Tensor::from_vec(flat, (b, t), device)?,
        mask: Tensor::from_vec(mask, (b, t), device)?,
        lengths: ids.iter().map(|i| i.len()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::plan_batches;

    #[test]
    fn batches_respect_the_budget_and_sort_by_length() {
        let lengths = [5, 30, 7, 30, 2, 12, 9, 40];
        let batches = plan_batches(&lengths, 64, 100, 1);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for b in &batches {
            let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(b.len() == 1 || b.len() * longest <= 64, "{b:?}");
        }
        assert_eq!(batches[0], vec![7]); // 40 alone: two would need 80 tokens
        assert_eq!(batches[1], vec![1, 3]); // the 30s together
        let capped = plan_batches(&[3; 10], 1000, 4, 1);
        assert_eq!(
            capped.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
    }

    #[test]
    fn a_batch_the_budget_closes_keeps_a_multiple_of_the_parts() {
        let sizes = |b: &[Vec<usize>]| b.iter().map(Vec::len).collect::<Vec<_>>();
        // 31 of 130 fit 4,096 tokens: 30 in two parts, the 31st opens the next batch.
        let lengths = [130; 100];
        let batches = plan_batches(&lengths, 4096, 256, 2);
        assert_eq!(sizes(&batches), vec![30, 30, 30, 10]);
        assert_eq!(
            sizes(&plan_batches(&lengths, 4096, 256, 1)),
            vec![31, 31, 31, 7]
        );
        // A batch of no more inputs than parts, or one closed by max_batch, is left alone.
        assert_eq!(sizes(&plan_batches(&[100; 5], 150, 256, 2)), vec![1; 5]);
        assert_eq!(sizes(&plan_batches(&[3; 7], 1000, 3, 2)), vec![3, 3, 1]);
        // Every input once, each batch within the budget.
        let lengths: Vec<usize> = (0..200).map(|i| 5 + (i * 37) % 120).collect();
        let batches = plan_batches(&lengths, 1000, 64, 2);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        for b in &batches {
            let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(b.len() * longest <= 1000, "{b:?}");
        }
    }
}
