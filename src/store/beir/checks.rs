//! Row checks shared by all formats: each returns the message of the problem, if any,
//! for the reader to place in its file and row.

use super::Kind;

/// An id must be present and not blank; `what` names it in the message.
pub(super) fn check_id(what: &str, id: Option<&str>) -> Result<(), String> {
    match id {
        None => Err(format!("null {what}")),
        Some(s) if s.trim().is_empty() => Err(format!("empty {what}")),
        Some(_) => Ok(()),
    }
}

/// A query needs a text; a document needs a text or, failing that, a title (BEIR corpora
/// such as TREC-COVID have documents with a title and no text).
pub(super) fn check_text(
    kind: Kind,
    text: Option<&str>,
    title: Option<&str>,
) -> Result<(), String> {
    match text {
        None => Err("null text".to_string()),
        Some(t) if t.trim().is_empty() => match kind {
            Kind::Corpus if title.is_some_and(|t| !t.trim().is_empty()) => Ok(()),
            Kind::Corpus => Err("empty text (and no title)".to_string()),
            _ => Err("empty text".to_string()),
        },
        Some(_) => Ok(()),
    }
}

/// A qrels score: an integer in the int32 range, surrounding whitespace allowed.
pub(super) fn parse_score(s: &str) -> Result<i32, String> {
    let t = s.trim();
    t.parse::<i32>().map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
            format!("score `{}` is out of the int32 range", shown(t))
        }
        _ => format!("score `{}` is not an integer", shown(t)),
    })
}

/// A value as shown inside a one-line message: control characters escaped, long values cut.
pub(super) fn shown(s: &str) -> String {
    const MAX: usize = 80;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
