//! The capture reader, [`hoplab_sim::capture::read_capture`], on
//! arbitrary bytes (written to a temporary file, the reader's input), and
//! [`hoplab_sim::capture::parse_frame`] on every frame it returns.
//!
//! Invariants: no panic; a capture that reads gives no more frame bytes
//! than the file has (nothing is invented or duplicated); every error has
//! a message.

use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};

use hoplab_sim::capture::{parse_frame, read_capture};

/// Tells apart the temporary files of one process's threads (the replay
/// tests run in parallel).
static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn read(data: &[u8]) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "hoplab-fuzz-capture-{}-{n}.pcap",
        std::process::id()
    ));
    fs::write(&path, data).expect("writing the temporary capture");
    let read = read_capture(&path);
    let _ = fs::remove_file(&path);
    match read {
        Err(e) => assert!(!e.to_string().is_empty(), "an error without a message"),
        Ok(frames) => {
            let bytes: usize = frames.iter().map(|f| f.data.len()).sum();
            assert!(
                bytes <= data.len(),
                "{bytes} frame bytes from a {}-byte file",
                data.len()
            );
            for f in &frames {
                if let Err(e) = parse_frame(f) {
                    assert!(!e.to_string().is_empty(), "a frame error without a message");
                }
            }
        }
    }
}
