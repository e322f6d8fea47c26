//! Hostile scenario files cost little: a deep nesting is refused in time
//! linear in the file, and a "YAML bomb" (a large anchored string reused by
//! many aliases) in memory a few times the file's size. The allocator of
//! this test binary counts bytes; the tests run one at a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// SAFETY: every call is passed to the system allocator unchanged; the
// counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's layout is passed on as it came.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes allocated at the peak of `f`, over what was live before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

fn parse(text: &str) -> Result<(), String> {
    hoplab_sim::oakestra::parse(Path::new("s.yaml"), "s", text)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `parse`, and how long it took.
fn time(text: &str) -> (Result<(), String>, Duration) {
    let start = Instant::now();
    let r = parse(text);
    (r, start.elapsed())
}

const HOSTS: &str = "version: 1\nhosts:\n  a: {}\n";

#[test]
fn a_yaml_bomb_costs_a_few_times_its_size() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // 500 KB anchored, 400 aliases: 200 MB once expanded.
    let mut text = format!(
        "{HOSTS}description: &big {}\ntraffic:\n",
        "x".repeat(500_000)
    );
    for i in 0..400 {
        text.push_str(&format!(
            "  - {{name: s{i}, from: a, proto: icmp, to: 10.0.0.2, payload: *big}}\n"
        ));
    }
    let (r, peak) = peak_of(|| parse(&text));
    let e = r.unwrap_err();
    assert!(e.contains("aliases expand this document"), "{e}");
    assert!(
        peak < 4 * text.len(),
        "refusing a {} byte file took {peak} bytes",
        text.len()
    );
}

#[test]
fn a_dense_file_without_aliases_is_within_the_budget() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Nodes of one character each: the most nodes a file can hold.
    let ports = vec!["7"; 200_000].join(",");
    let text = format!("{HOSTS}  b:\n    processes: [{{name: e, echo: {{tcp: [{ports}]}}}}]\n");
    if let Err(e) = parse(&text) {
        assert!(!e.contains("aliases"), "{e}");
    }
}

#[test]
fn deep_nesting_is_refused_in_linear_time() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // 100,000 nested `[` (quadratic in the YAML scanner: over a minute),
    // against a valid file of the same size (a long description).
    let deep = format!("{HOSTS}description: {}\n", "[".repeat(100_000));
    let flat = format!("{HOSTS}description: {}\n", "x".repeat(100_000));
    let (ok, t_flat) = time(&flat);
    ok.unwrap();
    let (r, t_deep) = time(&deep);
    assert!(r.unwrap_err().contains("nested deeper than 64"));
    assert!(
        t_deep <= 10 * t_flat + Duration::from_millis(50),
        "refusing the nesting took {t_deep:?}, parsing as much flat text {t_flat:?}"
    );
    // Many brackets, shallow: counted in one pass over the line.
    let (r, t_many) = time(&format!("{HOSTS}description: {}\n", "[]".repeat(50_000)));
    assert!(r.is_err());
    assert!(
        t_many <= 10 * t_flat + Duration::from_millis(50),
        "refusing 100,000 brackets took {t_many:?}, parsing as much flat text {t_flat:?}"
    );
}

#[test]
fn many_errors_are_located_in_one_pass() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // 15,000 steps, each with a bad target, against the same steps valid.
    let steps = |to: &str| {
        let mut t = format!("{HOSTS}traffic:\n");
        for i in 0..15_000 {
            t.push_str(&format!(
                "  - {{name: s{i}, from: a, proto: icmp, to: {to}}}\n"
            ));
        }
        t
    };
    let (good, bad) = (steps("10.0.0.2"), steps("nowhere"));
    let (ok, t_good) = time(&good);
    ok.unwrap();
    let (r, t_bad) = time(&bad);
    let e = r.unwrap_err();
    assert_eq!(e.lines().count(), 1001, "1000 listed, then the count");
    assert!(e.contains("s.yaml:1003:"), "the last listed is at its line");
    assert!(
        t_bad <= 5 * t_good,
        "locating the errors took {t_bad:?}, parsing the valid file {t_good:?}"
    );
}
