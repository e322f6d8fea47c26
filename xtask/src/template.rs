//! `{{name}}` placeholders in a text filled from a list of values: enough
//! for the benchmark reports' templates. It knows no escaping, loops or
//! conditions; the caller renders tables and lists itself.

use anyhow::{bail, Result};

/// `template` with every `{{name}}` replaced by its value in `vars`. Fails
/// when a placeholder has no value or a value no placeholder.
pub fn fill(template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut used = vec![false; vars.len()];
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!(
                "unclosed placeholder at {:?}",
                &after[..after.len().min(20)]
            );
        };
        let name = &after[..end];
        let Some(i) = vars.iter().position(|(k, _)| *k == name) else {
            bail!("no value for the placeholder {{{{{name}}}}}");
        };
        used[i] = true;
        out.push_str(&vars[i].1);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if let Some(i) = used.iter().position(|u| !u) {
        bail!("no placeholder {{{{{}}}}} in the template", vars[i].0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn fills_every_placeholder_and_checks_both_ways() {
        let v = |s: &str| s.to_string();
        assert_eq!(
            fill("a {{x}} b {{y}} {{x}}", &[("x", v("1")), ("y", v("{{z}}"))]).unwrap(),
            "a 1 b {{z}} 1"
        );
        assert!(fill("{{x}}", &[]).is_err());
        assert!(fill("x", &[("x", v("1"))]).is_err());
        assert!(fill("{{x", &[("x", v("1"))]).is_err());
    }
}
