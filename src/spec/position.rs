//! Where each key and value of a YAML file was written.
//!
//! serde gives typed values but forgets positions once a document is turned into a
//! value tree (needed for `${VAR}` interpolation and `--set` overrides). This index,
//! built from the parser's event stream, maps a path such as `nodes.2.model.dim` back
//! to a line and column, so every later error can point at the text the user wrote.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

use crate::error::Span;

/// Spans of keys and values by path (`a.b.0.c`; sequence items by index).
#[derive(Debug, Default, Clone)]
pub struct PositionIndex {
    values: HashMap<String, Span>,
    keys: HashMap<String, Span>,
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

fn join(parent: &str, seg: &str) -> String {
    if parent.is_empty() {
        seg.to_string()
    } else {
        format!("{parent}.{seg}")
    }
}

fn span_of(m: &saphyr_parser::Span) -> Span {
    Span {
        line: m.start.line(),
        col: m.start.col() + 1,
    }
}

impl PositionIndex {
    /// Indexes `text`. Syntax errors are not reported here (serde reports them with
    /// their own position); the index then simply holds what was read before the error.
    pub fn build(text: &str) -> Self {
        let mut index = PositionIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Some(Ok((event, span))) = parser.next_event() {
            let span = span_of(&span);
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(path) = index.place(&mut stack, Some(value.as_ref()), span) {
                        index.values.insert(path, span);
                    }
                }
                Event::MappingStart(..) => {
                    let path = index.place(&mut stack, None, span).unwrap_or_default();
                    index.values.entry(path.clone()).or_insert(span);
                    stack.push(Frame::Map {
                        path,
                        pending_key: None,
                    });
                }
                Event::SequenceStart(..) => {
                    let path = index.place(&mut stack, None, span).unwrap_or_default();
                    index.values.entry(path.clone()).or_insert(span);
                    stack.push(Frame::Seq { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Alias(_) => {
                    index.place(&mut stack, None, span);
                }
                _ => {}
            }
        }
        index
    }

    /// Places a node in its parent; returns the node's path when it is a value
    /// (not a mapping key). `scalar` is the text when the node is a scalar.
    fn place(&mut self, stack: &mut [Frame], scalar: Option<&str>, span: Span) -> Option<String> {
        match stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = join(path, &next.to_string());
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                Some(key) => Some(join(path, &key)),
                None => {
                    // This node is a key.
                    let key = scalar.unwrap_or("?").to_string();
                    self.keys.insert(join(path, &key), span);
                    *pending_key = Some(key);
                    None
                }
            },
        }
    }

    /// The span of the value at `path`, or of its nearest written ancestor.
    pub fn value(&self, path: &str) -> Option<Span> {
        let mut p = path.to_string();
        loop {
            if let Some(s) = self.values.get(&p) {
                return Some(*s);
            }
            match p.rfind('.') {
                Some(i) => p.truncate(i),
                None if !p.is_empty() => p.clear(),
                None => return None,
            }
        }
    }

    /// The span of the key at `path` (falls back to the value, then to ancestors).
    pub fn key(&self, path: &str) -> Option<Span> {
        self.keys.get(path).copied().or_else(|| self.value(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_keys_values_and_items() {
        let text = "a: 1\nnodes:\n  - id: x\n    model:\n      dim: 8\n  - id: y\n";
        let ix = PositionIndex::build(text);
        assert_eq!(ix.value("a"), Some(Span { line: 1, col: 4 }));
        assert_eq!(ix.key("nodes"), Some(Span { line: 2, col: 1 }));
        assert_eq!(ix.value("nodes.0.id"), Some(Span { line: 3, col: 9 }));
        assert_eq!(ix.key("nodes.0.model.dim"), Some(Span { line: 5, col: 7 }));
        assert_eq!(
            ix.value("nodes.0.model.dim"),
            Some(Span { line: 5, col: 12 })
        );
        assert_eq!(ix.key("nodes.1.id"), Some(Span { line: 6, col: 5 }));
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(ix.value("nodes.1.nothing"), ix.value("nodes.1"));
    }
}
