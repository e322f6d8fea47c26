//! Field paths (`links[2].b.host`, `hosts.a.sysctls."net.ipv4.ip_forward"`):
//! [`Seg`], read and written (`split_path`, `path_string`); where one
//! is in the scenario text: [`locate`] replays the document up to the field
//! and lets the YAML parser report where it stopped; serde's own errors
//! carry their location.
//!
//! Knows YAML and field paths, not what the fields mean.

use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

use super::ScenarioError;

pub(super) fn from_yaml_error(file: &Path, e: &serde_yaml::Error) -> ScenarioError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    // serde_yaml prefixes the message with the field path ("hosts.a: ...")
    // and appends " at line L column C"; split those into our own fields.
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    let (field, message) = match msg.split_once(": ") {
        Some((f, m)) if !f.contains(' ') => (f.to_string(), m.to_string()),
        _ => ("(document)".to_string(), msg),
    };
    let message = match super::suggest::did_you_mean(&message) {
        Some(hint) => format!("{message}{hint}"),
        None => message,
    };
    ScenarioError {
        file: file.to_path_buf(),
        line,
        column,
        field,
        message,
    }
}

/// One step of a field path: a map key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// `hosts.a.sysctls."net.ipv4.ip_forward"` → its steps; a key holding `.`,
/// `[`, `]`, `"` or spaces is quoted (see [`crate::values::key`]).
pub(super) fn split_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut chars = path.chars().peekable();
    let mut key = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' if key.is_empty() => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => key.extend(chars.next()),
                        '"' => break,
                        c => key.push(c),
                    }
                }
                out.push(Seg::Key(std::mem::take(&mut key)));
            }
            '.' => {
                if !key.is_empty() {
                    out.push(Seg::Key(std::mem::take(&mut key)));
                }
            }
            '[' => {
                if !key.is_empty() {
                    out.push(Seg::Key(std::mem::take(&mut key)));
                }
                let idx: String = chars.by_ref().take_while(|&c| c != ']').collect();
                if let Ok(n) = idx.parse() {
                    out.push(Seg::Index(n));
                }
            }
            c => key.push(c),
        }
    }
    if !key.is_empty() {
        out.push(Seg::Key(key));
    }
    out
}

/// The field path of `segs`, as [`split_path`] reads it.
pub(super) fn path_string(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&crate::values::key(k));
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        out.push_str("(document)");
    }
    out
}

const FOUND: &str = "\u{0}hoplab-locate-found";

/// Line and column (1-based) where the value at `path` starts, found by
/// walking the document with a seed that stops there; the YAML parser
/// reports the position of the failure. None when the path is absent.
/// (For many paths at once, `marks::find` parses the text once.)
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let segs = split_path(path);
    let de = serde_yaml::Deserializer::from_str(text);
    match (Probe { path: &segs }).deserialize(de) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

/// A map key as text, scalars only.
fn key_text(k: &serde_yaml::Value) -> Option<String> {
    use serde_yaml::Value as V;
    match k {
        V::String(s) => Some(s.clone()),
        V::Number(n) => Some(n.to_string()),
        V::Bool(b) => Some(b.to_string()),
        V::Null => Some("~".to_string()),
        _ => None,
    }
}

struct Probe<'a> {
    path: &'a [Seg],
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        if self.path.is_empty() {
            return Err(de::Error::custom(FOUND));
        }
        while let Some(k) = m.next_key::<serde_yaml::Value>()? {
            let hit = matches!(&self.path[0], Seg::Key(s) if key_text(&k).as_ref() == Some(s));
            if hit {
                m.next_value_seed(Probe {
                    path: &self.path[1..],
                })?;
            } else {
                m.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        if self.path.is_empty() {
            return Err(de::Error::custom(FOUND));
        }
        let mut i = 0;
        loop {
            let hit = matches!(self.path[0], Seg::Index(n) if n == i);
            let more = if hit {
                s.next_element_seed(Probe {
                    path: &self.path[1..],
                })?
                .is_some()
            } else {
                s.next_element::<de::IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
}

impl Probe<'_> {
    fn leaf<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}
