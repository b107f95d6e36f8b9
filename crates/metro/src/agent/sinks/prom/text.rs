//! The text formats: label names and values as the exposition needs them, the
//! OpenMetrics-to-classic conversion for scrapers that do not ask for OpenMetrics, and the
//! histogram's exemplars in OpenMetrics (prometheus-client takes exemplars only from its
//! own histogram types, whose counts cannot be set).

use std::collections::HashMap;
use std::fmt::Write;

use super::Labels;
use crate::agent::fleet::Exemplar;
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

/// An exemplar's labels: the connection (local end, responder). At most 104 characters
/// with two IPv6 addresses, under OpenMetrics' 128 for an exemplar's label set.
pub fn exemplar_labels(ex: &Exemplar) -> [(&'static str, String); 4] {
    [
        ("src", ex.src.ip().to_string()),
        ("sport", ex.src.port().to_string()),
        ("dst", ex.dst.ip().to_string()),
        ("dport", ex.dst.port().to_string()),
    ]
}

/// The OpenMetrics text of a label set: `k="v"` each, values escaped, comma-separated.
fn label_text(l: &Labels) -> String {
    let mut o = String::new();
    for (k, v) in l {
        if !o.is_empty() {
            o.push(',');
        }
        o.push_str(k);
        o.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => o.push_str("\\\\"),
                '"' => o.push_str("\\\""),
                '\n' => o.push_str("\\n"),
                c => o.push(c),
            }
        }
        o.push('"');
    }
    o
}

/// The label set of a sample line after its `{`, without `le`, as [`label_text`] writes it
/// (prometheus-client puts `le` first or last, depending on its version): commas and the
/// closing brace count only outside quoted values.
fn series_key(rest: &str) -> Option<String> {
    let (mut quoted, mut escaped) = (false, false);
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' | '}' if !quoted => {
                parts.push(&rest[start..i]);
                start = i + 1;
                if c == '}' {
                    let kept: Vec<&str> = parts
                        .into_iter()
                        .filter(|p| !p.is_empty() && !p.starts_with("le="))
                        .collect();
                    return Some(kept.join(","));
                }
            }
            _ => {}
        }
    }
    None
}

/// OpenMetrics text with each histogram bucket's exemplar appended to its line
/// (`... # {src="..",sport="..",dst="..",dport=".."} VALUE TIMESTAMP`): `series` gives each
/// series' labels and its buckets' exemplars, in the order of its bucket lines.
pub fn with_exemplars(
    om: &str,
    family: &str,
    series: &[(Labels, Vec<Option<Exemplar>>)],
) -> String {
    let bucket = format!("{family}_bucket{{");
    let by_key: HashMap<String, &[Option<Exemplar>]> = series
        .iter()
        .map(|(l, ex)| (label_text(l), ex.as_slice()))
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = String::with_capacity(om.len() + series.len() * 200);
    for line in om.lines() {
        out.push_str(line);
        if let Some(key) = line.strip_prefix(&bucket).and_then(series_key)
            && let Some(exs) = by_key.get(&key)
        {
            let k = seen.entry(key).or_default();
            if let Some(Some(ex)) = exs.get(*k) {
                let ls: Vec<String> = exemplar_labels(ex)
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                let ts = ex.ts.max(0);
                let _ = write!(
                    out,
                    " # {{{}}} {} {}.{:09}",
                    ls.join(","),
                    ex.secs,
                    ts / 1_000_000_000,
                    ts % 1_000_000_000
                );
            }
            *k += 1;
        }
        out.push('\n');
    }
    out
}
