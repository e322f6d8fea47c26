//! The scenario loader, [`hoplab_sim::oakestra::parse`], on arbitrary
//! UTF-8 text (other bytes are skipped: a scenario is read as a string).
//!
//! Invariants: no panic; an error has a message; a scenario that loads
//! loads the same way twice (the expansion is deterministic).

use std::path::Path;

pub fn parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.yaml");
    match hoplab_sim::oakestra::parse(file, "fuzz", text) {
        Err(e) => assert!(!e.to_string().is_empty(), "an error without a message"),
        Ok(x) => {
            let again = hoplab_sim::oakestra::parse(file, "fuzz", text)
                .expect("a scenario that loaded once loads again");
            assert_eq!(format!("{x:?}"), format!("{again:?}"), "two loads differ");
        }
    }
}
