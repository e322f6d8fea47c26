//! "Did you mean": for a message of serde's that names an unknown word and
//! the words it expected (`unknown field `route`, expected one of `sysctls`,
//! `routes`, ...``; `unknown variant ...`), the expected word closest to
//! the unknown one. It reads only the message, so every field and variant
//! of the schema (and any added later) is covered without a list here; it
//! knows nothing of the schema itself.

/// ` (did you mean `routes`?)` when `message` is serde's "unknown
/// field/variant `x`, expected ..." and one expected word is close to `x`
/// (edit distance at most a third of the longer word, and at least 1).
pub fn did_you_mean(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (unknown, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected")?.1;
    let words: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let (best, d) = words
        .iter()
        .map(|w| (*w, distance(&unknown.to_lowercase(), &w.to_lowercase())))
        .min_by_key(|&(w, d)| (d, w.len()))?;
    let longest = unknown.chars().count().max(best.chars().count());
    (best != unknown && d <= (longest / 3).max(1)).then(|| format!(" (did you mean `{best}`?)"))
}

/// Levenshtein distance between `a` and `b`, in characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_expected_word_is_suggested() {
        let m = "unknown field `route`, expected one of `sysctls`, `ipv6`, `bridges`, `tuns`, \
                 `routes`, `firewall`, `processes`";
        assert_eq!(
            did_you_mean(m).as_deref(),
            Some(" (did you mean `routes`?)")
        );
        assert_eq!(
            did_you_mean("unknown field `adr`, expected `addr` or `mac`").as_deref(),
            Some(" (did you mean `addr`?)")
        );
        assert_eq!(
            did_you_mean("unknown variant `TCP`, expected one of `tcp`, `udp`, `icmp`").as_deref(),
            Some(" (did you mean `tcp`?)")
        );
        // Nothing close: no guess.
        assert_eq!(
            did_you_mean("unknown field `colour`, expected `addr` or `mac`"),
            None
        );
        assert_eq!(did_you_mean("invalid type: string, expected a map"), None);
    }
}
