//! What the YAML parser is given, and what it may cost, before the file is
//! read as a scenario: the file's size ([`MAX_FILE_BYTES`]), its nesting
//! depth ([`MAX_DEPTH`], counted on the text first: the parser's scanner
//! spends time quadratic in the depth of `[`/`{`), what aliases may expand
//! to ([`EXPANSION_FACTOR`] times the file, so an anchored string reused by
//! thousands of aliases is refused before anything copies it), and
//! duplicate map keys (which serde would let the last one win).
//!
//! Knows YAML's shape only: no scenario field, no meaning.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde::Deserializer;

use super::locate::Seg;

/// The largest scenario file read, in bytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// The deepest nesting of sequences and maps.
pub const MAX_DEPTH: usize = 64;
/// The document with its aliases expanded may be at most this many times
/// the file's size.
pub const EXPANSION_FACTOR: usize = 4;

/// Something the parser must not be given, at a line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The file's size and the depth of its flow collections (`[`, `{`),
/// counted on the text: quoted scalars, comments and block scalars (an
/// nftables script's braces) are skipped. Cheap, and run before the parser.
pub fn check_text(text: &str) -> Result<(), Refused> {
    if text.len() > MAX_FILE_BYTES {
        return Err(Refused {
            line: 1,
            column: 1,
            message: format!(
                "the file is {} bytes; a scenario may be at most {MAX_FILE_BYTES} bytes (1 MiB)",
                text.len()
            ),
        });
    }
    scan(text, usize::MAX).map(|_| ())
}

/// The flow collections still open where line `stop` (1-based) starts:
/// where each `[` or `{` is (line, column) and which it is; the innermost
/// last. For a syntax error's message: which bracket is not closed.
pub fn open_at(text: &str, stop: usize) -> Vec<(usize, usize, char)> {
    scan(text, stop).unwrap_or_default()
}

fn scan(text: &str, stop: usize) -> Result<Vec<(usize, usize, char)>, Refused> {
    let mut open: Vec<(usize, usize, char)> = Vec::new();
    let mut block: Option<usize> = None;
    for (n, line) in text.lines().enumerate().take(stop.saturating_sub(1)) {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block {
            if line.trim().is_empty() || indent > parent {
                continue;
            }
            block = None;
        }
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        // (column - 1, (byte index, char))
        let mut chars = line.char_indices().enumerate().peekable();
        while let Some((k, (i, c))) = chars.next() {
            match (quote, c) {
                (Some('"'), '\\') => {
                    chars.next();
                }
                (Some(q), c) if c == q => {
                    if q == '\'' && chars.peek().is_some_and(|&(_, (_, c))| c == '\'') {
                        chars.next();
                    } else {
                        quote = None;
                    }
                }
                (Some(_), _) => {}
                (None, '#') if prev.is_whitespace() => break,
                (None, '\'' | '"') if token_start(prev) => quote = Some(c),
                (None, '[' | '{') => {
                    let column = k + 1;
                    if open.len() >= MAX_DEPTH {
                        return Err(too_deep(n + 1, column));
                    }
                    open.push((n + 1, column, c));
                }
                (None, ']' | '}') => match open.last() {
                    Some(&(_, _, o)) if (o == '[') != (c == ']') => return Ok(open),
                    _ => {
                        open.pop();
                    }
                },
                (None, '|' | '>')
                    if open.is_empty() && token_start(prev) && block_header(&line[i..]) =>
                {
                    block = Some(node_indent(line));
                    break;
                }
                _ => {}
            }
            prev = c;
        }
    }
    Ok(open)
}

/// The indentation of the node a line starts: past the spaces and the
/// `- ` of sequence entries (`  - key: |` is a map at 4).
fn node_indent(line: &str) -> usize {
    let mut rest = line.trim_start_matches(' ');
    while let Some(r) = rest.strip_prefix("- ") {
        rest = r.trim_start_matches(' ');
    }
    line.len() - rest.len()
}

fn token_start(prev: char) -> bool {
    prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':' | '-' | '?')
}

/// `|`, `>-`, `|2+`, … up to a comment or the end of the line.
fn block_header(rest: &str) -> bool {
    let rest = rest[1..].trim_start_matches(|c: char| c.is_ascii_digit() || c == '+' || c == '-');
    let rest = rest.trim_start();
    rest.is_empty() || rest.starts_with('#')
}

fn too_deep(line: usize, column: usize) -> Refused {
    Refused {
        line,
        column,
        message: format!("nested deeper than {MAX_DEPTH} levels"),
    }
}

/// A key written twice in one map: its path, and which later occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub path: Vec<Seg>,
    /// 1 for the second occurrence, 2 for the third, …
    pub nth: usize,
}

/// Walks the parsed document once without copying anything, aliases
/// expanded as serde would see them: refuses a depth over [`MAX_DEPTH`]
/// and an expansion over [`EXPANSION_FACTOR`] times the text; returns the
/// duplicate keys.
pub fn walk(text: &str) -> Result<Vec<Duplicate>, serde_yaml::Error> {
    let mut st = Walk {
        budget: text
            .len()
            .saturating_add(1024)
            .saturating_mul(EXPANSION_FACTOR),
        used: 0,
        depth: 0,
        path: Vec::new(),
        dups: Vec::new(),
    };
    let de = serde_yaml::Deserializer::from_str(text);
    Node(&mut st).deserialize(de)?;
    Ok(st.dups)
}

struct Walk {
    budget: usize,
    used: usize,
    depth: usize,
    path: Vec<Seg>,
    dups: Vec<Duplicate>,
}

impl Walk {
    fn spend<E: de::Error>(&mut self, bytes: usize) -> Result<(), E> {
        // A node costs a byte, whatever its size: a file without aliases
        // spends at most about twice its size (a node is at least a
        // character of text, and so is each byte of a scalar).
        self.used = self.used.saturating_add(bytes + 1);
        if self.used > self.budget {
            return Err(E::custom(format!(
                "aliases expand this document to over {EXPANSION_FACTOR} times its size; write the values out"
            )));
        }
        Ok(())
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.spend(0)?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(E::custom(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }
}

/// Any node: counted, its children walked.
struct Node<'w>(&'w mut Walk);

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// A map key: its text when it is a scalar (walked like any node).
struct Key<'w>(&'w mut Walk);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! scalar_visits {
    ($out:expr) => {
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            self.0.spend(v.len())?;
            Ok(($out)(v))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            self.visit_str("~")
        }
    };
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map key")
    }
    scalar_visits!(|v: &str| Some(v.to_string()));
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Option<String>, A::Error> {
        Node(self.0).visit_map(m).map(|()| None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<Option<String>, A::Error> {
        Node(self.0).visit_seq(s).map(|()| None)
    }
    fn visit_enum<A: EnumAccess<'de>>(self, e: A) -> Result<Option<String>, A::Error> {
        Node(self.0).visit_enum(e).map(|()| None)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML")
    }
    scalar_visits!(|_: &str| ());
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let w = self.0;
        w.enter()?;
        let mut seen: HashMap<String, usize> = HashMap::new();
        while let Some(k) = m.next_key_seed(Key(w))? {
            let Some(k) = k else {
                m.next_value_seed(Node(w))?;
                continue;
            };
            let count = seen.entry(k.clone()).or_insert(0);
            if *count > 0 {
                let mut path = w.path.clone();
                path.push(Seg::Key(k.clone()));
                w.dups.push(Duplicate { path, nth: *count });
            }
            *count += 1;
            w.path.push(Seg::Key(k));
            m.next_value_seed(Node(w))?;
            w.path.pop();
        }
        w.depth -= 1;
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        let w = self.0;
        w.enter()?;
        let mut i = 0;
        loop {
            w.path.push(Seg::Index(i));
            let more = s.next_element_seed(Node(w))?.is_some();
            w.path.pop();
            if !more {
                break;
            }
            i += 1;
        }
        w.depth -= 1;
        Ok(())
    }
    fn visit_enum<A: EnumAccess<'de>>(self, e: A) -> Result<(), A::Error> {
        let w = self.0;
        let (_, v) = e.variant_seed(Key(w))?;
        v.newtype_variant_seed(Node(w))
    }
}
