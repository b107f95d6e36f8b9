//! The text formats: label names and values as the exposition needs them, and the
//! OpenMetrics-to-classic conversion for scrapers that do not ask for OpenMetrics.

use super::Labels;
use crate::agent::sinks::catalog::{self, Label};

/// Labels as Prometheus labels, values as they are (prometheus-client escapes them for the
/// text formats; protobuf carries them raw). A tag becomes a label only when it is
/// `key:value` with a non-empty value (the key's other characters become `_`, a leading
/// digit gets a `_`); one whose key is reserved (`__`, `le`, metro's own keys:
/// [`catalog::reserved_keys`]) or already present is left out.
pub fn labels(ls: &[Label]) -> Labels {
    let mut out: Labels = Vec::with_capacity(ls.len());
    for l in ls {
        if !l.tag {
            out.push((l.key.to_string(), l.value().to_string()));
            continue;
        }
        let v = l.value();
        let mut name: String = l
            .key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name.is_empty() || v.is_empty() {
            continue;
        }
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            name.insert(0, '_');
        }
        if name.starts_with("__")
            || name == "le"
            || catalog::reserved_keys().any(|k| k == name)
            || out.iter().any(|(n, _)| *n == name)
        {
            continue;
        }
        out.push((name, v.to_string()));
    }
    out
}

/// OpenMetrics text to Prometheus text 0.0.4: counter families are named with their
/// `_total` suffix in `# HELP`/`# TYPE`, and `# UNIT`/`# EOF` lines go.
pub fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        match meta {
            Some(m) => out.push_str(m.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
