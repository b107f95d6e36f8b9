//! The text formats: label names and values as the exposition needs them, and the
//! OpenMetrics-to-classic conversion for scrapers that do not ask for OpenMetrics.

use super::Labels;

/// Escape a label value for the text format (prometheus-client writes values verbatim).
pub fn esc(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// The instance tags that are `key:value` with a usable key, as Prometheus labels (the key's
/// other characters become `_`); keys that would clash with metro's labels (`src`, `dst`,
/// `iface`, `le`, and `kind`, `state` of the self-metrics' breakdowns), repeat, or are
/// reserved (`__`) are left out.
pub fn tag_labels(tags: &[String]) -> Labels {
    let mut out: Labels = Vec::new();
    for t in tags {
        let Some((k, v)) = t.split_once(':') else {
            continue;
        };
        let mut name: String = k
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
            || ["src", "dst", "iface", "le", "kind", "state"].contains(&name.as_str())
            || out.iter().any(|(n, _)| *n == name)
        {
            continue;
        }
        out.push((name, esc(v)));
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
