//! What a step expects back, as the scenario file says it: `echo`,
//! `silence`, `refused`, `{reply: TEXT}`, `{error: TEXT}`, an HTTP
//! response (`crate::l7::spec`) or a load step's bounds (`crate::load`).
//! It sits above both, so that `crate::values` stays a leaf.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::l7::spec::HttpExpect;
use crate::load::LoadExpect;

/// What a step expects back: `echo`, `silence`, `refused`, `{reply: TEXT}`;
/// an HTTP step `{status, headers, body}`; any step `{error: TEXT}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Expect {
    /// The reply equals the payload (WebSocket: every message comes back;
    /// HTTP: status 200).
    #[default]
    Echo,
    /// The reply equals this text.
    Reply(String),
    /// No reply within the timeout (the packet is dropped on its way).
    Silence,
    /// TCP: the connection is refused (RST); UDP/ICMP: an ICMP error comes back.
    Refused,
    /// An HTTP response with this status, these headers, this body.
    Http(HttpExpect),
    /// The step ends in an error whose words contain this text (a TLS
    /// certificate error, a server that does not speak HTTP).
    Error(String),
    /// A load step's bounds (`ok`, `spread`, `never`, `one_of`; HTTP: `status`).
    Load(LoadExpect),
}

const EXPECT_KEYS: &[&str] = &[
    "reply", "status", "headers", "body", "error", "ok", "spread", "never", "one_of", "overflow",
];

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Expect;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "echo, silence, refused, {reply: TEXT}, {error: TEXT} or {status, headers, body}",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Expect, E> {
                match v {
                    "echo" => Ok(Expect::Echo),
                    "silence" => Ok(Expect::Silence),
                    "refused" => Ok(Expect::Refused),
                    _ => Err(E::unknown_variant(
                        v,
                        &["echo", "silence", "refused", "reply", "error"],
                    )),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Expect, A::Error> {
                let mut http = HttpExpect::default();
                let mut seen_http = false;
                let mut single: Option<Expect> = None;
                let mut load = LoadExpect::default();
                let mut seen_load = false;
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "ok" => load.ok = m.next_value()?,
                        "spread" => load.spread = Some(m.next_value()?),
                        "never" => load.never = m.next_value()?,
                        "one_of" => load.one_of = m.next_value()?,
                        "overflow" => load.overflow = m.next_value()?,
                        "reply" | "error" if single.is_some() || seen_http => {
                            return Err(de::Error::custom(format!(
                                "write `{k}` alone: {{{k}: TEXT}}"
                            )))
                        }
                        "reply" => single = Some(Expect::Reply(m.next_value()?)),
                        "error" => single = Some(Expect::Error(m.next_value()?)),
                        _ if single.is_some() => {
                            return Err(de::Error::custom("`reply` and `error` stand alone"))
                        }
                        "status" => http.status = Some(m.next_value()?),
                        "headers" => http.headers = m.next_value()?,
                        "body" => http.body = Some(m.next_value()?),
                        _ => return Err(de::Error::unknown_field(&k, EXPECT_KEYS)),
                    }
                    seen_load |= matches!(
                        k.as_str(),
                        "ok" | "spread" | "never" | "one_of" | "overflow"
                    );
                    seen_http |= matches!(k.as_str(), "status" | "headers" | "body");
                }
                match single {
                    Some(_) if seen_load => {
                        Err(de::Error::custom("`reply` and `error` stand alone"))
                    }
                    Some(e) => Ok(e),
                    None if seen_load => {
                        if !http.headers.is_empty() || http.body.is_some() {
                            return Err(de::Error::custom(
                                "a load step expects `ok`, `spread`, `never`, `one_of` and `status` only",
                            ));
                        }
                        load.status = http.status;
                        Ok(Expect::Load(load))
                    }
                    None if seen_http => Ok(Expect::Http(http)),
                    None => Err(de::Error::custom("empty map: write {reply: TEXT}")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Echo => f.write_str("echo"),
            Expect::Reply(t) => write!(f, "reply {t:?}"),
            Expect::Silence => f.write_str("silence"),
            Expect::Refused => f.write_str("refused"),
            Expect::Http(h) => write!(f, "{h}"),
            Expect::Error(t) => write!(f, "error containing {t:?}"),
            Expect::Load(l) => write!(f, "{l}"),
        }
    }
}
