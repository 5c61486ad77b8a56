//! Positions in the config text: byte offsets to line and column, and the key path
//! (`streams[1].push[0].url`) at a byte span, for errors that serde reports with a span
//! but without the key.

use std::fmt::{self, Write as _};
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Appends `key` to a key path, quoting it if it is not a bare TOML key.
pub(super) fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        path.push_str(key);
    } else {
        let _ = write!(path, "{key:?}");
    }
}

/// The key path of the smallest key or value in `text` whose span contains `target`,
/// or `None` if the text does not parse or nothing contains it.
pub(super) fn key_path_at(text: &str, target: &Range<usize>) -> Option<String> {
    let root: Node = toml::from_str(text).ok()?;
    let mut best = Best::default();
    walk(&root, target, &mut String::new(), &mut best);
    best.path
}

#[derive(Default)]
struct Best {
    len: usize,
    path: Option<String>,
}

impl Best {
    /// Records `path` if `span` contains `target` and is no larger than the best so far;
    /// ties go to the later, deeper candidate.
    fn offer(&mut self, span: Range<usize>, target: &Range<usize>, path: &str) {
        let contains = span.start <= target.start && target.end <= span.end;
        let len = span.end - span.start;
        if contains && (self.path.is_none() || len <= self.len) {
            self.len = len;
            self.path = Some(path.to_owned());
        }
    }
}

/// Every node is searched, not only those whose span contains the target: a table's
/// span covers its header and its own keys but not its sub-tables written further down
/// (`[[streams.push]]` below `[[streams]]`).
fn walk(node: &Node, target: &Range<usize>, path: &mut String, best: &mut Best) {
    let base = path.len();
    match node {
        Node::Table(entries) => {
            for (key, value) in entries {
                push_key(path, key.get_ref());
                best.offer(key.span(), target, path);
                best.offer(value.span(), target, path);
                walk(value.get_ref(), target, path, best);
                path.truncate(base);
            }
        }
        Node::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let _ = write!(path, "[{i}]");
                best.offer(item.span(), target, path);
                walk(item.get_ref(), target, path, best);
                path.truncate(base);
            }
        }
        Node::Leaf => {}
    }
}

/// A TOML document reduced to its shape and the spans of its keys and values.
enum Node {
    Table(Vec<(Spanned<String>, Spanned<Node>)>),
    Array(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Table(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        // Columns count characters: the space after the two-byte 'é' is column 3.
        assert_eq!(line_col(text, 9), (2, 3));
        // An offset inside a character counts as that character.
        assert_eq!(line_col(text, 8), (2, 2));
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn quotes_non_bare_keys() {
        let mut p = String::new();
        push_key(&mut p, "streams");
        push_key(&mut p, "a b");
        assert_eq!(p, r#"streams."a b""#);
    }

    #[test]
    fn finds_nested_array_tables() {
        let text = "[[streams]]\npath = \"a/b\"\n[[streams.push]]\nname = \"x\"\n[[streams.push]]\nname = \"y\"\n";
        let at = text.find("\"y\"").unwrap();
        assert_eq!(
            key_path_at(text, &(at..at + 3)).as_deref(),
            Some("streams[0].push[1].name")
        );
        let at = text.rfind("name").unwrap();
        assert_eq!(
            key_path_at(text, &(at..at + 4)).as_deref(),
            Some("streams[0].push[1].name")
        );
    }
}
