//! Gloss cleaning: the definition part of a WordNet gloss, without its examples, which
//! becomes the query.

/// The definition part of a gloss, which becomes the query.
///
/// A gloss is `definition; definition; "example"; "example"- Author`. Parts are split at
/// `;` outside double quotes; the definition is every part before the first one that
/// starts with `"`. What follows the first example in WordNet is more examples, broken
/// examples missing their opening quote, or usage notes that name the lemma itself (which
/// would leak the answer), so all of it is dropped. Examples glued to a definition with
/// `:` or `,` (`connect to a vehicle: "hitch the trailer to the car"`) are cut off for
/// the same reason. A later part with an odd number of `"` is a broken example
/// (`close in; darkness enclosed him"`) and is dropped; in the first part an odd `"` is a
/// typo at its end (`post office`: `...are available"`), removed. Empty parts and stray
/// `;` vanish. An empty result means the gloss had no definition.
pub(super) fn gloss_definition(gloss: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    for (i, c) in gloss.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            ';' if !in_quote => {
                parts.push(&gloss[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&gloss[start..]);
    let mut kept: Vec<&str> = Vec::new();
    for (k, part) in parts.into_iter().enumerate() {
        let mut part = part.trim();
        if part.starts_with('"') {
            break;
        }
        if part.matches('"').count() % 2 == 1 {
            if k > 0 {
                continue;
            }
            part = part.trim_end_matches('"').trim_end();
        }
        let part = strip_glued_example(part);
        if !part.is_empty() {
            kept.push(part);
        }
    }
    kept.join("; ")
}

/// `text: "example"` or `text, e.g., "example"` → `text`; any other part unchanged.
///
/// Only a quotation that ends the part and follows `:` or `,` is cut: a quotation after
/// a plain space is usually part of the definition (`promise of reward as in "carrot
/// and stick"`).
fn strip_glued_example(part: &str) -> &str {
    let Some(body) = part.strip_suffix('"') else {
        return part;
    };
    let Some(open) = body.rfind('"') else {
        return part;
    };
    let before = part[..open].trim_end();
    let Some(rest) = before
        .strip_suffix(':')
        .or_else(|| before.strip_suffix(','))
    else {
        return part;
    };
    let rest = rest.trim_end();
    let rest = rest.strip_suffix("e.g.").unwrap_or(rest);
    rest.trim_end().trim_end_matches(',').trim_end()
}
