//! Where many field paths are, in one pass over the YAML events: the
//! parser yaml_serde itself uses (libyaml-rs), read event by event with
//! each event's start mark, so locating every error of a file costs one
//! parse, not one per error.
//!
//! Knows YAML events and field paths ([`Seg`]), not what the fields mean.
//! Aliases are not followed: a path is found where it is written.

use std::collections::HashMap;
use std::mem::MaybeUninit;

use libyaml_rs as sys;

use super::locate::Seg;

/// Line and column (1-based) where each wanted path's value starts: a path
/// and which occurrence of its last key (0: the first; later ones are
/// duplicates). None for a path not in the text (or past a syntax error).
pub(super) fn find(text: &str, wanted: &[(&[Seg], usize)]) -> Vec<Option<(usize, usize)>> {
    let mut out = vec![None; wanted.len()];
    let mut index: HashMap<(&[Seg], usize), Vec<usize>> = HashMap::new();
    for (i, w) in wanted.iter().enumerate() {
        index.entry(*w).or_default().push(i);
    }
    let Some(mut parser) = Parser::new(text) else {
        return out;
    };
    let mut walk = Walk::default();
    while let Some((event, line, column)) = parser.next() {
        if let Some((path, nth)) = walk.node(&event) {
            if let Some(is) = index.get(&(path.as_slice(), nth)) {
                for &i in is {
                    out[i].get_or_insert((line + 1, column + 1));
                }
            }
        }
        walk.after(event);
    }
    out
}

/// An event, as far as paths need it.
enum Event {
    Scalar(String),
    SeqStart,
    MapStart,
    Alias,
    End,
    Other,
}

enum Frame {
    Seq {
        next: usize,
    },
    Map {
        /// The key of the value to come; None while a key is expected.
        key: Option<(String, usize)>,
        seen: HashMap<String, usize>,
    },
    /// Inside a key that is itself a collection: no path reaches it.
    InKey,
}

#[derive(Default)]
struct Walk {
    path: Vec<Seg>,
    frames: Vec<Frame>,
    /// The path of the node just started, when it is a collection.
    started: Option<(Vec<Seg>, bool)>,
}

impl Walk {
    /// The path (and occurrence) of the node this event starts, if any.
    fn node(&mut self, e: &Event) -> Option<(Vec<Seg>, usize)> {
        if !matches!(
            e,
            Event::Scalar(_) | Event::SeqStart | Event::MapStart | Event::Alias
        ) {
            return None;
        }
        let (seg, nth, is_key) = match self.frames.last_mut() {
            None => (None, 0, false),
            Some(Frame::InKey) => {
                self.started = Some((Vec::new(), true));
                return None;
            }
            Some(Frame::Seq { next }) => {
                *next += 1;
                (Some(Seg::Index(*next - 1)), 0, false)
            }
            Some(Frame::Map { key, seen }) => match key.take() {
                Some((k, nth)) => (Some(Seg::Key(k)), nth, false),
                None => {
                    let k = match e {
                        Event::Scalar(s) => s.clone(),
                        _ => String::new(),
                    };
                    let count = seen.entry(k.clone()).or_insert(0);
                    *key = Some((k, *count));
                    *count += 1;
                    (None, 0, true)
                }
            },
        };
        if is_key {
            self.started = Some((Vec::new(), true));
            return None;
        }
        let mut path = self.path.clone();
        path.extend(seg);
        self.started = Some((path.clone(), false));
        Some((path, nth))
    }

    fn after(&mut self, e: Event) {
        let started = self.started.take();
        match e {
            Event::SeqStart | Event::MapStart => {
                let (path, in_key) = started.unwrap_or_default();
                let in_key = in_key || matches!(self.frames.last(), Some(Frame::InKey));
                if in_key {
                    self.frames.push(Frame::InKey);
                    return;
                }
                self.frames.push(if matches!(e, Event::SeqStart) {
                    Frame::Seq { next: 0 }
                } else {
                    Frame::Map {
                        key: None,
                        seen: HashMap::new(),
                    }
                });
                self.path = path;
            }
            Event::End => {
                let frame = self.frames.pop();
                let had_path = matches!(frame, Some(Frame::Seq { .. } | Frame::Map { .. }));
                self.path
                    .truncate(self.path.len() - usize::from(had_path && !self.path.is_empty()));
            }
            _ => {}
        }
    }
}

/// The libyaml-rs parser over `text`, deleted when dropped.
struct Parser<'t> {
    sys: Box<MaybeUninit<sys::yaml_parser_t>>,
    _text: &'t str,
    failed: bool,
}

impl<'t> Parser<'t> {
    fn new(text: &'t str) -> Option<Parser<'t>> {
        let mut sys = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
        // SAFETY: the box is memory for one parser, which this initializes.
        let init = unsafe { sys::yaml_parser_initialize(sys.as_mut_ptr()) };
        if init.fail {
            return None;
        }
        // SAFETY: the parser is initialized; `text` outlives it (the
        // parser borrows it for 't).
        unsafe {
            sys::yaml_parser_set_input_string(sys.as_mut_ptr(), text.as_ptr(), text.len() as u64)
        };
        Some(Parser {
            sys,
            _text: text,
            failed: false,
        })
    }

    /// The next event and its start (0-based line and column); None at
    /// the end or at a syntax error.
    fn next(&mut self) -> Option<(Event, usize, usize)> {
        if self.failed {
            return None;
        }
        let mut ev = MaybeUninit::<sys::yaml_event_t>::uninit();
        // SAFETY: the parser is initialized; `ev` is memory for one event.
        let r = unsafe { sys::yaml_parser_parse(self.sys.as_mut_ptr(), ev.as_mut_ptr()) };
        if r.fail {
            self.failed = true;
            return None;
        }
        // SAFETY: a successful parse wrote the event.
        let ev = unsafe { ev.assume_init_mut() };
        let event = match ev.type_ {
            sys::YAML_SCALAR_EVENT => {
                // SAFETY: a scalar event's data is its `scalar` member.
                let s = unsafe { ev.data.scalar };
                // SAFETY: the parser made `value` point to `length` bytes,
                // alive until the event is deleted below.
                let bytes = unsafe { std::slice::from_raw_parts(s.value, s.length as usize) };
                Event::Scalar(String::from_utf8_lossy(bytes).into_owned())
            }
            sys::YAML_SEQUENCE_START_EVENT => Event::SeqStart,
            sys::YAML_MAPPING_START_EVENT => Event::MapStart,
            sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => Event::End,
            sys::YAML_ALIAS_EVENT => Event::Alias,
            sys::YAML_STREAM_END_EVENT => {
                self.failed = true;
                Event::Other
            }
            _ => Event::Other,
        };
        let (line, column) = (ev.start_mark.line as usize, ev.start_mark.column as usize);
        // SAFETY: the event was written by the parser and is deleted once.
        unsafe { sys::yaml_event_delete(ev) };
        Some((event, line, column))
    }
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // SAFETY: the parser was initialized in `new` and is deleted once.
        unsafe { sys::yaml_parser_delete(self.sys.as_mut_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::super::locate::{locate, split_path};
    use super::find;

    #[test]
    fn finds_what_locate_finds_in_one_pass() {
        let text = "version: 1\nhosts:\n  a: {sysctls: {net.ipv4.ip_forward: 1}}\n  b:\n    routes:\n      - {to: default, via: 10.0.0.1}\n      - to: 10.1.0.0/16\n        dev: eth0\n  ? [complex, key]\n  : {x: 1}\nlinks:\n  - a: {host: a}\n    b: {host: b}\n";
        let paths = [
            "version",
            "hosts.a.sysctls.\"net.ipv4.ip_forward\"",
            "hosts.b.routes[0].via",
            "hosts.b.routes[1].dev",
            "links[0].b.host",
            "links[0].b",
            "links[1]",
            "hosts.x",
        ];
        let segs: Vec<_> = paths.iter().map(|p| split_path(p)).collect();
        let wanted: Vec<_> = segs.iter().map(|s| (s.as_slice(), 0)).collect();
        let got = find(text, &wanted);
        let want: Vec<_> = paths.iter().map(|p| locate(text, p)).collect();
        assert_eq!(got, want);
        assert_eq!(got[3], Some((8, 14)));
        assert_eq!(got[7], None);
    }
}
