//! The operators' kit in `deploy/`: the Prometheus rules (`promtool check rules` and the unit
//! tests `promtool test rules`), the Grafana dashboard (its JSON model, and every query parsed
//! by promtool), the Datadog dashboard and monitors (their JSON structure), and a real
//! `metro run` scraped by a real Prometheus that loads the rules: every metric name the kit
//! uses is one the agent exposes (or sends to DogStatsD), every rule evaluates without error
//! and stays quiet on a healthy agent, the recorded p50 lands in the true RTT's bucket, every
//! dashboard query answers, and an agent that stops is seen as down. A pod laid out as the
//! kubelet does feeds the per-namespace rules and the dashboard's per-container panel.
//!
//! The names the kit uses are extracted from the files themselves ([`kit_prometheus_names`],
//! [`kit_statsd_names`]): after a change of the metric catalog, this test says which name
//! the kit still uses and the agent no longer has.
//!
//! promtool and prometheus come from Debian's `prometheus` package (`.ci/run` installs it).
//! The real run needs root (network namespaces).

use crate::support;
use crate::support::agent;
use crate::support::netns;
use crate::support::pod::Pod;

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::{Agent, Statsd, TempDir, http_get, http_status, named};
use netns::{Client, Delayed, EchoServer, Netns};
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn json(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_saphyr::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const RULES: &str = "deploy/prometheus/metro.rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/metro.rules.test.yml";
const GRAFANA: &str = "deploy/grafana/metro.json";
const DD_DASHBOARD: &str = "deploy/datadog/metro-dashboard.json";
const DD_MONITORS: &str = "deploy/datadog/metro-monitors.json";
const RUNBOOK: &str = "docs/operate.md";

/// `promtool ARGS` in `dir`: success and the whole output.
fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool (Debian package `prometheus`)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// --- names in PromQL and in Datadog queries -------------------------------------------------

/// The metric names an expression selects: identifiers (outside quoted strings) that start
/// with `metro_`, and `up`. Recorded names (`level:metric:operation`) are not the agent's.
fn prom_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let id = &expr[start..i];
            // No label of metro's starts with `metro_`, and no function is called `up`: the
            // identifiers kept are metric names.
            if id.starts_with("metro_") || id == "up" {
                out.insert(id.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The DogStatsD names a Datadog query uses: `system.net.tcp.*` and `metro.*` tokens.
fn statsd_names(query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = query.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let rest = &query[i..];
        let boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.');
        if boundary && (rest.starts_with("system.net.tcp.") || rest.starts_with("metro.")) {
            let len = rest
                .bytes()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'_')
                .count();
            out.insert(rest[..len].to_string());
            i += len;
        } else {
            i += 1;
        }
    }
    out
}

/// Every string under a key named `key`, anywhere in `v`.
fn strings_under(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key
                    && let Some(s) = x.as_str()
                {
                    out.push(s.to_string());
                }
                strings_under(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| strings_under(x, key, out)),
        _ => {}
    }
}

/// The rules file's rules: (`record` or `alert` name, the rule).
fn rules() -> Vec<(String, Value)> {
    let y = yaml(RULES);
    let mut out = Vec::new();
    for g in y["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["record"].as_str().or(r["alert"].as_str()).expect("name");
            out.push((name.to_string(), r.clone()));
        }
    }
    out
}

/// Grafana's variables as a test substitutes them: every node and destination (the `All`
/// value, `.*`), and the intervals Grafana computes.
fn grafana_expr(expr: &str, rate_interval: &str, range: &str) -> String {
    expr.replace("$__rate_interval", rate_interval)
        .replace("$__range", range)
        .replace("$__interval", rate_interval)
        .replace("$node", ".*")
        .replace("$dst", ".*")
}

/// The Grafana dashboard's panels with their (title, expr) queries.
fn grafana_targets() -> Vec<(String, String)> {
    let d = json(GRAFANA);
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// Every metric name of the agent's that the rules and the Grafana dashboard use (its panels
/// and its variables' queries). The one list the real run checks.
fn kit_prometheus_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, r) in rules() {
        names.extend(prom_names(r["expr"].as_str().unwrap()));
    }
    for (_, e) in grafana_targets() {
        names.extend(prom_names(&e));
    }
    let mut defs = Vec::new();
    strings_under(&json(GRAFANA)["templating"], "definition", &mut defs);
    for d in defs {
        names.extend(prom_names(&d));
    }
    names
}

/// Every DogStatsD name the Datadog dashboard and monitors use.
fn kit_statsd_names() -> BTreeSet<String> {
    let mut qs = Vec::new();
    strings_under(&json(DD_DASHBOARD), "query", &mut qs);
    strings_under(&json(DD_MONITORS), "query", &mut qs);
    qs.iter().flat_map(|q| statsd_names(q)).collect()
}

/// The anchors of the runbook's headings, as GitHub and most renderers make them.
fn runbook_anchors() -> BTreeSet<String> {
    read(RUNBOOK)
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

// --- Prometheus rules -----------------------------------------------------------------------

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repo("deploy/prometheus");
    let (ok, out) = promtool(&dir, &["check", "rules", "metro.rules.yml"]);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&dir, &["test", "rules", "metro.rules.test.yml"]);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_is_documented_and_unit_tested_both_ways_and_every_record_is_checked() {
    let anchors = runbook_anchors();
    let tests = yaml(RULE_TESTS);
    let tests = tests["tests"].as_array().unwrap();
    // alert name -> (a case where it fires, a case where it stays silent)
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut checked_exprs = Vec::new();
    for t in tests {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            let fires = a["exp_alerts"].as_array().is_some_and(|v| !v.is_empty());
            let e = cases
                .entry(a["alertname"].as_str().unwrap().to_string())
                .or_default();
            if fires {
                e.0 = true;
            } else {
                e.1 = true;
            }
        }
        for p in t["promql_expr_test"].as_array().into_iter().flatten() {
            checked_exprs.push(p["expr"].as_str().unwrap().to_string());
        }
    }
    let mut alerts = 0;
    for (name, r) in rules() {
        let expr = r["expr"].as_str().unwrap();
        // Quantiles come from histogram buckets only (directly or through a recorded rate
        // of them), never from the per-pair quantile gauges.
        if expr.contains("quantile") {
            assert!(
                expr.contains("_bucket"),
                "{name}: a quantile not over buckets"
            );
        }
        assert!(
            !expr.contains("_p50_seconds")
                && !expr.contains("_p90_seconds")
                && !expr.contains("_p99_seconds"),
            "{name}: uses the per-host quantile gauges"
        );
        if r.get("record").is_some() {
            assert!(
                checked_exprs.iter().any(|e| e.contains(&name)),
                "recording rule {name} has no promql_expr_test in {RULE_TESTS}"
            );
            continue;
        }
        alerts += 1;
        let ann = &r["annotations"];
        for k in ["summary", "description", "runbook_url"] {
            assert!(
                ann[k].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: no {k} annotation"
            );
        }
        assert!(r["labels"]["severity"].is_string(), "{name}: no severity");
        let url = ann["runbook_url"].as_str().unwrap();
        let anchor = url
            .strip_prefix("docs/operate.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} is not a section of {RUNBOOK}"));
        assert_eq!(anchor, name.to_lowercase());
        assert!(
            anchors.contains(anchor),
            "{name}: {RUNBOOK} has no section #{anchor}"
        );
        let (fires, silent) = cases.get(&name).copied().unwrap_or_default();
        assert!(fires, "{name}: no unit test where it fires");
        assert!(silent, "{name}: no unit test where it stays silent");
    }
    assert!(alerts >= 7, "{alerts} alerts");
}

/// promtool catches what a bad rule would be: an unparseable expression, and a unit test
/// whose expectation is wrong (so a green run of the real files means something).
#[test]
fn promtool_rejects_a_broken_rule_and_a_wrong_expectation() {
    let dir = TempDir::new("operate-neg");
    dir.write(
        "bad.yml",
        "groups:\n  - name: g\n    rules:\n      - record: x:y:z\n        expr: sum by (dst (rate(metro_tcp_rtt_seconds_bucket[5m]))\n",
    );
    let (ok, out) = promtool(&dir.0, &["check", "rules", "bad.yml"]);
    assert!(!ok, "{out}");
    // The real rules with one expectation changed: db's rate of the 0.05 bucket is 4, not 5.
    std::fs::copy(repo(RULES), dir.path("metro.rules.yml")).unwrap();
    let tests = read(RULE_TESTS);
    let wrong = tests.replacen(
        "'dst:metro_tcp_rtt_seconds_bucket:rate5m{dst=\"db\",le=\"0.05\"}'\n            value: 4",
        "'dst:metro_tcp_rtt_seconds_bucket:rate5m{dst=\"db\",le=\"0.05\"}'\n            value: 5",
        1,
    );
    assert_ne!(wrong, tests);
    dir.write("metro.rules.test.yml", &wrong);
    let (ok, out) = promtool(&dir.0, &["test", "rules", "metro.rules.test.yml"]);
    assert!(!ok, "{out}");
}

// --- Grafana --------------------------------------------------------------------------------

#[test]
fn grafana_dashboard_is_well_formed_and_every_query_parses() {
    let d = json(GRAFANA);
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["uid"].as_str().is_some_and(|t| !t.is_empty()));
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |n: &str| {
        vars.iter()
            .find(|v| v["name"] == n)
            .unwrap_or_else(|| panic!("no variable {n}"))
    };
    let ds = var("datasource");
    assert_eq!(
        (&ds["type"], &ds["query"]),
        (&"datasource".into(), &"prometheus".into())
    );
    let ds_ref = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    for n in ["node", "dst"] {
        let v = var(n);
        assert_eq!(v["type"], "query", "{n}");
        assert_eq!(v["datasource"], ds_ref, "{n}");
        assert_eq!(
            (v["multi"].as_bool(), v["includeAll"].as_bool()),
            (Some(true), Some(true))
        );
    }

    let mut ids = BTreeSet::new();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    let mut types = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "{title}: id twice");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && g["h"].as_u64().unwrap() > 0,
            "{title}: gridPos"
        );
        let ty = p["type"].as_str().unwrap();
        types.insert(ty.to_string());
        if ty == "row" {
            continue;
        }
        assert_eq!(p["datasource"], ds_ref, "{title}: panel datasource");
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}"
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"], ds_ref, "{title}: target datasource");
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
            let e = t["expr"].as_str().unwrap();
            assert!(
                e.contains("$node"),
                "{title}: {e} ignores the node variable"
            );
            if e.contains("metro_tcp_") {
                assert!(
                    e.contains("$dst"),
                    "{title}: {e} ignores the destination variable"
                );
            }
            if e.contains("quantile") {
                assert!(e.contains("_bucket"), "{title}: {e}");
            }
            if ty == "heatmap" {
                assert_eq!(t["format"], "heatmap", "{title}");
                assert!(e.contains("metro_tcp_rtt_seconds_bucket") && e.contains("by (le)"));
            }
            // Each query becomes a recording rule: promtool parses (and checks) it.
            n += 1;
            let e = grafana_expr(e, "5m", "1h").replace('\'', "''");
            rules.push_str(&format!(
                "      - record: dashboard:q{n}\n        expr: '{e}'\n"
            ));
        }
    }
    for ty in ["heatmap", "timeseries", "bargauge"] {
        assert!(types.contains(ty), "no {ty} panel");
    }
    // What the issue asks the dashboard to show, by the names it queries.
    let names = kit_prometheus_names();
    for m in [
        "metro_tcp_rtt_seconds_bucket",
        "metro_tcp_retransmits_total",
        "metro_packets_received_total",
        "metro_packets_dropped_total",
        "metro_flows_shed_total",
        "metro_series_overflow_total",
        "metro_statsd_send_errors_total",
    ] {
        assert!(names.contains(m), "the kit never shows {m}");
    }
    let all = grafana_targets();
    assert!(
        all.iter().any(|(_, e)| e.contains("container_name")),
        "per-container RTT"
    );
    for q in ["0.5", "0.9", "0.99"] {
        assert!(
            all.iter()
                .any(|(_, e)| e.contains(&format!("histogram_quantile({q}, sum by (dst, le)"))),
            "p{q} by destination"
        );
    }
    assert!(
        all.iter().any(|(_, e)| e.starts_with("topk(")),
        "top destinations"
    );

    let dir = TempDir::new("operate-grafana");
    dir.write("dashboard.rules.yml", &rules);
    let (ok, out) = promtool(&dir.0, &["check", "rules", "dashboard.rules.yml"]);
    assert!(ok, "the dashboard's queries as rules:\n{out}\n{rules}");
    assert!(out.contains(&format!("{n} rules found")), "{out}");
}

// --- Datadog --------------------------------------------------------------------------------

/// A Datadog widget (and its group's children): type, requests, queries, formulas.
fn check_widget(w: &Value, vars: &BTreeSet<String>, count: &mut usize) {
    let d = &w["definition"];
    let ty = d["type"].as_str().expect("widget type");
    assert!(
        ["group", "note", "timeseries", "heatmap", "toplist"].contains(&ty),
        "widget type {ty}"
    );
    *count += 1;
    match ty {
        "group" => {
            assert_eq!(d["layout_type"], "ordered");
            let ws = d["widgets"].as_array().unwrap();
            assert!(!ws.is_empty());
            ws.iter().for_each(|w| check_widget(w, vars, count));
        }
        "note" => assert!(d["content"].as_str().is_some_and(|s| !s.is_empty())),
        _ => {
            assert!(d["title"].as_str().is_some_and(|s| !s.is_empty()));
            let reqs = d["requests"].as_array().unwrap();
            assert!(!reqs.is_empty(), "{ty}: no request");
            for r in reqs {
                let want = if ty == "toplist" {
                    "scalar"
                } else {
                    "timeseries"
                };
                assert_eq!(r["response_format"], want, "{d}");
                let mut names = BTreeSet::new();
                for q in r["queries"].as_array().unwrap() {
                    assert_eq!(q["data_source"], "metrics");
                    let query = q["query"].as_str().unwrap();
                    check_datadog_query(query, vars);
                    assert!(names.insert(q["name"].as_str().unwrap().to_string()));
                }
                let formulas = r["formulas"].as_array().unwrap();
                assert!(!formulas.is_empty());
                for f in formulas {
                    let f = f["formula"].as_str().unwrap();
                    // Every query a formula names exists.
                    for tok in f.split(|c: char| !c.is_ascii_alphanumeric()) {
                        if tok.starts_with('q') && tok[1..].parse::<u32>().is_ok() {
                            assert!(names.contains(tok), "formula {f}: no query {tok}");
                        }
                    }
                }
            }
        }
    }
}

/// A metric query `[aggregator:]metric{scope} [by {tags}][.as_count()]`: its template
/// variables exist, percentiles only on the distribution, no aggregate of the per-host
/// quantile gauges.
fn check_datadog_query(q: &str, vars: &BTreeSet<String>) {
    let (agg, rest) = q
        .split_once(':')
        .unwrap_or_else(|| panic!("{q}: no aggregator"));
    let agg = agg.rsplit(['(', ' ']).next().unwrap();
    assert!(
        [
            "avg", "sum", "min", "max", "p50", "p75", "p90", "p95", "p99"
        ]
        .contains(&agg),
        "{q}: aggregator {agg}"
    );
    let metric = rest.split('{').next().unwrap();
    if agg.starts_with('p') {
        assert_eq!(
            metric, "system.net.tcp.rtt.distribution",
            "{q}: percentile of a non-distribution"
        );
    }
    assert!(
        ![
            "system.net.tcp.rtt.p50",
            "system.net.tcp.rtt.p90",
            "system.net.tcp.rtt.p99"
        ]
        .contains(&metric),
        "{q}: aggregates per-host quantile gauges"
    );
    let scope = rest
        .split_once('{')
        .and_then(|(_, s)| s.split_once('}'))
        .unwrap_or_else(|| panic!("{q}: no scope"))
        .0;
    for v in scope.split(',').filter_map(|s| s.strip_prefix('$')) {
        assert!(vars.contains(v), "{q}: no template variable {v}");
    }
    if metric.ends_with(".samples")
        || metric.ends_with(".retransmits")
        || (metric.starts_with("metro.") && metric != "metro.flows.active")
    {
        assert!(
            q.contains(".as_count()"),
            "{q}: a count without .as_count()"
        );
    }
}

/// A term of a monitor's arithmetic without the parentheses around it (those of
/// `.as_count()` stay).
fn unparen(t: &str) -> &str {
    let mut t = t.trim().trim_start_matches('(');
    while t.ends_with(')') && t.matches(')').count() > t.matches('(').count() {
        t = &t[..t.len() - 1];
    }
    t
}

#[test]
fn datadog_dashboard_and_monitors_are_well_formed() {
    let d = json(DD_DASHBOARD);
    assert!(d["title"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(["ordered", "free"].contains(&d["layout_type"].as_str().unwrap()));
    let vars: BTreeSet<String> = d["template_variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert!(v["prefix"].is_string() && v["default"].is_string());
            v["name"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(vars, BTreeSet::from(["host".into(), "dst".into()]));
    let mut count = 0;
    for w in d["widgets"].as_array().unwrap() {
        check_widget(w, &vars, &mut count);
    }
    assert!(count > 10, "{count} widgets");

    let anchors = runbook_anchors();
    let monitors = json(DD_MONITORS);
    let monitors = monitors.as_array().unwrap();
    assert!(monitors.len() >= 6);
    for m in monitors {
        let name = m["name"].as_str().unwrap();
        assert_eq!(m["type"], "query alert", "{name}");
        let q = m["query"].as_str().unwrap();
        // `eval(window[,shift]):metric query OP threshold`, the threshold equal to the
        // critical one (Datadog's API refuses a monitor where they differ).
        let (head, rest) = q.split_once("):").unwrap_or_else(|| panic!("{q}"));
        let func = head.split('(').next().unwrap();
        assert!(
            ["avg", "sum", "min", "max", "pct_change", "change"].contains(&func),
            "{q}"
        );
        let (lhs, op, thr) = [" > ", " < ", " >= ", " <= "]
            .iter()
            .find_map(|op| rest.rsplit_once(op).map(|(l, t)| (l, *op, t)))
            .unwrap_or_else(|| panic!("{q}: no comparison"));
        let thr: f64 = thr.parse().unwrap_or_else(|_| panic!("{q}: threshold"));
        let crit = m["options"]["thresholds"]["critical"].as_f64().unwrap();
        assert_eq!(
            thr, crit,
            "{name}: query threshold vs options.thresholds.critical"
        );
        if let Some(w) = m["options"]["thresholds"]["warning"].as_f64() {
            assert!(if op.contains('>') { w < crit } else { w > crit }, "{name}");
        }
        for part in lhs.split(" / ").flat_map(|p| p.split(" + ")) {
            check_datadog_query(unparen(part), &BTreeSet::new());
        }
        // The name's and message's {{tag.name}} are groups of the query.
        let groups: BTreeSet<&str> = q
            .split("by {")
            .skip(1)
            .flat_map(|s| s.split('}').next().unwrap().split(','))
            .collect();
        let msg = m["message"].as_str().unwrap();
        for text in [name, msg] {
            for t in text.split("{{").skip(1) {
                let t = t.split("}}").next().unwrap();
                if let Some(tag) = t.strip_suffix(".name") {
                    assert!(
                        groups.contains(tag),
                        "{name}: {{{{{t}}}}} is not a group of {q}"
                    );
                }
            }
        }
        let anchor = msg
            .split("docs/operate.md#")
            .nth(1)
            .unwrap_or_else(|| panic!("{name}: no runbook link"))
            .split_whitespace()
            .next()
            .unwrap();
        assert!(anchors.contains(anchor), "{name}: no section #{anchor}");
        if m["options"]["notify_no_data"] == true {
            assert!(
                m["options"]["no_data_timeframe"].as_u64().is_some(),
                "{name}"
            );
        }
    }
}

/// The Python that has PyPI's datadog-api-client (`.ci/run` puts it in its venv and sets
/// `METRO_PYTHON`), or None and the test is skipped, saying so (a failure under .ci/run).
fn datadog_python() -> Option<String> {
    let py = std::env::var("METRO_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import datadog_api_client.v1.model.dashboard"])
        .status()
        .is_ok_and(|s| s.success());
    metro_testkit::root::needs(
        ok,
        &format!("{py} cannot import datadog_api_client"),
        "`pip install datadog-api-client==2.62.0`, or set METRO_PYTHON to a Python that can; \
         .ci/run does",
    )
    .then_some(py)
}

/// Datadog's own API client parses the dashboard and every monitor into its models (made
/// from Datadog's OpenAPI specification), and refuses a copy with an unknown widget type,
/// a wrong monitor type and a monitor without its query.
#[test]
fn datadog_json_parses_with_datadogs_own_api_client() {
    let Some(py) = datadog_python() else {
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/datadog_check.py"
    );
    let run = |dash: &Path, mons: &Path| {
        let out = Command::new(&py)
            .arg(script)
            .arg(dash)
            .arg(mons)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = run(&repo(DD_DASHBOARD), &repo(DD_MONITORS));
    assert!(ok, "{out}");
    let n = json(DD_MONITORS).as_array().unwrap().len();
    assert_eq!(out.matches(": ok").count(), 1 + n, "{out}");

    let dir = TempDir::new("operate-dd");
    let mut d = json(DD_DASHBOARD);
    d["widgets"][0]["definition"]["widgets"][1]["definition"]["type"] = "heat_map".into();
    let mut m = json(DD_MONITORS);
    m[0]["type"] = "query_alert".into();
    m[1].as_object_mut().unwrap().remove("query");
    let (bd, bm) = (
        dir.write("d.json", &d.to_string()),
        dir.write("m.json", &m.to_string()),
    );
    let (ok, out) = run(&bd, &bm);
    assert!(!ok, "{out}");
    assert!(
        out.contains("dashboard: not parsed: $.widgets[0].definition"),
        "{out}"
    );
    assert!(
        out.contains("monitor 0 ") && out.contains("not parsed: $.type"),
        "{out}"
    );
    assert!(
        out.contains("missing 1 required positional argument: 'query'"),
        "{out}"
    );
}

// --- a real agent, a real Prometheus --------------------------------------------------------

/// HTTP GET inside `ns`: (status, body) ([`http_status`]).
fn get(ns: &Netns, addr: &str, path: &str) -> Option<(u16, String)> {
    let (addr, path) = (addr.parse().ok()?, path.to_string());
    ns.enter(move || http_status(addr, &path))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A rule's name, health (`ok`, `err`, `unknown`) and last error.
type RuleHealth = (String, String, String);

/// A real Prometheus (Debian's package) inside `ns`, scraping `target` every second and
/// evaluating `rules` every second.
struct Prometheus<'a> {
    child: Child,
    ns: &'a Netns,
    addr: &'static str,
}

impl<'a> Prometheus<'a> {
    fn start(ns: &'a Netns, dir: &TempDir, target: &str, rules: &Path) -> Prometheus<'a> {
        let cfg = dir.write(
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nrule_files: ['{}']\nscrape_configs:\n  - job_name: metro\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        );
        let addr = "127.0.0.1:9090";
        let log = std::fs::File::create(dir.path("prometheus.log")).unwrap();
        let child = ns
            .command("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run prometheus (Debian package `prometheus`)");
        let p = Prometheus { child, ns, addr };
        let end = Instant::now() + 30 * S;
        while p.get("/-/ready").is_none_or(|(code, _)| code != 200) {
            assert!(
                Instant::now() < end,
                "prometheus not ready: {}",
                std::fs::read_to_string(dir.path("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(S / 5);
        }
        p
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        get(self.ns, self.addr, path)
    }

    fn api(&self, path: &str) -> Value {
        let (code, body) = self
            .get(path)
            .unwrap_or_else(|| panic!("{path}: no answer"));
        assert_eq!(code, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"].clone()
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let d = self.api(&format!("/api/v1/query?query={}", urlencode(promql)));
        d["result"].as_array().cloned().unwrap_or_default()
    }

    /// The alerting rules' states by name, and every rule's health.
    fn rules(&self) -> (BTreeMap<String, String>, Vec<RuleHealth>) {
        let d = self.api("/api/v1/rules");
        let (mut states, mut health) = (BTreeMap::new(), Vec::new());
        for g in d["groups"].as_array().unwrap() {
            for r in g["rules"].as_array().unwrap() {
                let name = r["name"].as_str().unwrap().to_string();
                if r["type"] == "alerting" {
                    states.insert(name.clone(), r["state"].as_str().unwrap().to_string());
                }
                health.push((
                    name,
                    r["health"].as_str().unwrap().to_string(),
                    r["lastError"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        (states, health)
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Dashboard panels whose queries are empty on a host without containers.
const CONTAINER_PANELS: &[&str] = &["RTT p99 per container / pod"];

#[test]
fn a_real_agent_serves_every_metric_the_kit_uses_and_prometheus_runs_the_rules() {
    if !netns::needs_root("a live agent in network namespaces") {
        return;
    }
    let _load = support::timed();
    // A 10 ms round trip (5 ms each way) between the client namespace, where metro and
    // Prometheus run, and a server.
    let d = Delayed::new("opk", 43, Duration::from_millis(5));
    let dir = TempDir::new("operate");
    let srv = EchoServer::start(&d.s, "10.200.43.2:7000");
    let rx = Statsd::udp(d.c.enter(|| UdpSocket::bind("127.0.0.1:8125").unwrap()));
    let cfg = dir.write(
        "metro.yaml",
        "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: 8125\n  prometheus_listen: 127.0.0.1:9464\n  distributions: true\ninstances:\n  - interface: veth0\n    tags: ['env:ops']\n    ips: ['10.200.43.2']\n",
    );
    let mut ag = Agent::run_config(&d.c, &cfg, &dir);
    ag.wait_log("capture filter", 20 * S);
    let prom = Prometheus::start(&d.c, &dir, "127.0.0.1:9464", &repo(RULES));
    let mut client = Client::start(&d.c, srv.addr, 200, Duration::from_millis(5), 20);
    rx.wait_for(&mut ag, 30 * S, "three flushes with samples", |m| {
        named(m, "system.net.tcp.rtt.samples").len() >= 3
    });

    // The exposition: every name the rules and the dashboard use is served.
    let body = http_get(&d.c, "127.0.0.1:9464", "/metrics");
    let mut exposed = BTreeSet::new();
    let mut types = BTreeMap::new();
    for l in body.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            let (n, ty) = t.split_once(' ').unwrap();
            types.insert(n.to_string(), ty.to_string());
        } else if !l.starts_with('#') && !l.is_empty() {
            exposed.insert(l.split(['{', ' ']).next().unwrap().to_string());
        }
    }
    let kit = kit_prometheus_names();
    eprintln!("the kit's Prometheus names: {kit:?}");
    let missing: Vec<&String> = kit
        .iter()
        .filter(|n| *n != "up" && !exposed.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "not served by metro: {missing:?}\n{body}"
    );
    // Gauges are never rated, only counters and histograms (by the exposition's own types).
    let family = |n: &str| {
        ["_bucket", "_count", "_sum", "_total"]
            .iter()
            .find_map(|s| n.strip_suffix(s).filter(|b| types.contains_key(*b)))
            .unwrap_or(n)
            .to_string()
    };
    let exprs: Vec<String> = rules()
        .iter()
        .map(|(_, r)| r["expr"].as_str().unwrap().to_string())
        .chain(grafana_targets().into_iter().map(|(_, e)| e))
        .collect();
    for e in &exprs {
        for f in ["rate(", "irate(", "increase("] {
            for arg in e.split(f).skip(1) {
                let arg = arg.split('[').next().unwrap();
                for n in prom_names(arg) {
                    let ty = types.get(&family(&n)).map(String::as_str);
                    assert!(
                        matches!(ty, Some("counter" | "histogram")),
                        "{f}{n}...: {n} is a {ty:?}, not a counter"
                    );
                }
            }
        }
    }

    // DogStatsD: every name the Datadog JSON uses was sent.
    let sent: BTreeSet<String> = rx.all().into_iter().map(|m| m.name).collect();
    let dd = kit_statsd_names();
    eprintln!("the Datadog JSON's names: {dd:?}");
    let missing: Vec<&String> = dd.iter().filter(|n| !sent.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "not sent by metro: {missing:?} (sent: {sent:?})"
    );

    // Prometheus with the rules: wait for the recorded p50 to settle on the traffic.
    let end = Instant::now() + 60 * S;
    let p50 = loop {
        let r = prom.query("dst:metro_tcp_rtt_seconds:p50_5m{dst=\"10.200.43.2\"}");
        if let Some(v) = r
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            && v.is_finite()
        {
            break v;
        }
        assert!(Instant::now() < end, "no recorded p50: {r:?}");
        std::thread::sleep(S);
    };
    let truth = client.median_ms() / 1000.0;
    eprintln!("recorded p50 {p50:.5} s, the client's median round trip {truth:.5} s");
    // The default buckets around 10 ms: (7.5 ms, 10 ms], (10 ms, 15 ms].
    assert!((0.0075..=0.015).contains(&p50), "recorded p50 {p50} s");
    assert!((0.0075..=0.015).contains(&truth), "client median {truth} s");

    // Every rule evaluates without error; on a healthy agent no alert is pending or firing.
    std::thread::sleep(3 * S);
    let (states, health) = prom.rules();
    assert_eq!(health.len(), rules().len(), "{health:?}");
    for (name, h, err) in &health {
        assert_eq!(h, "ok", "{name}: {err}");
    }
    for (name, st) in &states {
        assert_eq!(st, "inactive", "{name} on a healthy agent");
    }
    for name in [
        "dst:metro_tcp_rtt_seconds:p99_5m",
        "instance:metro_tcp_rtt_seconds:p99_5m",
    ] {
        assert_eq!(prom.query(name).len(), 1, "{name}");
    }

    // Every dashboard query answers with data, but for containers (none here).
    for (title, e) in grafana_targets() {
        let r = prom.query(&grafana_expr(&e, "1m", "5m"));
        if CONTAINER_PANELS.contains(&title.as_str()) {
            assert!(r.is_empty(), "{title}: {r:?}");
        } else {
            assert!(!r.is_empty(), "{title}: {e}: no data");
        }
    }
    client.stop();

    // The agent stops: its scrapes fail and MetroAgentDown goes pending (it fires after 5
    // minutes, longer than a test waits).
    ag.terminate(20 * S);
    let end = Instant::now() + 30 * S;
    loop {
        let (states, _) = prom.rules();
        if states["MetroAgentDown"] == "pending" {
            break;
        }
        assert!(
            Instant::now() < end,
            "MetroAgentDown never pending: {states:?}"
        );
        std::thread::sleep(S);
    }
    let up = prom.query("ALERTS{alertname=\"MetroAgentDown\"}");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["metric"]["instance"], "127.0.0.1:9464");
}

/// A pod laid out as the kubelet (systemd cgroup driver) and containerd do (as in
/// tests/it/agent_containers.rs): its namespace behind a routed host, its process in a
/// containerd scope of a kubepods slice, the kubelet's log links naming pod `checkout-api-7d9f`
/// in namespace `shop`, container `api`. The pod talks to a server 10 ms away; the
/// per-namespace recording rules and the dashboard's per-container panel show it.
#[test]
fn pod_tags_feed_the_namespace_rules_and_the_container_panel() {
    if !netns::needs_root("a pod's namespace and cgroups, a live agent") {
        return;
    }
    let _load = support::timed();
    const N: u8 = 44;
    let d = Delayed::new("opp", N, Duration::from_millis(5));
    let host = &d.c;
    let dir = TempDir::new("operate-pod");
    let root = dir.path("host");
    let pod = Pod::new("opq", N, host, &d.s, &root);
    let server = format!("10.200.{N}.2");
    let _srv = EchoServer::start(&d.s, &format!("{server}:7000"));

    let _rx = Statsd::udp(host.enter(|| UdpSocket::bind("127.0.0.1:8125").unwrap()));
    let cfg = dir.write(
        "metro.yaml",
        &format!(
            "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: 8125\n  prometheus_listen: 127.0.0.1:9464\ninstances:\n  - interface: any\n    ips: ['{server}']\n"
        ),
    );
    let mut ag = Agent::start_env(
        host,
        &["run", "--config", cfg.to_str().unwrap()],
        &dir.path("stderr"),
        &[("METRO_HOST_ROOT", root.to_str().unwrap())],
    );
    ag.wait_log("capture filter", 20 * S);
    let prom = Prometheus::start(host, &dir, "127.0.0.1:9464", &repo(RULES));
    let to = format!("{server}:7000").parse().unwrap();
    let mut client = Client::start(&pod.ns, to, 100, Duration::from_millis(5), 20);

    let end = Instant::now() + 60 * S;
    let p50 = loop {
        let r = prom.query("kube_namespace:metro_tcp_rtt_seconds:p50_5m");
        if let Some(s) = r.first() {
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!(s["metric"]["kube_namespace"], "shop", "{r:?}");
            if let Some(v) = s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok())
                && v.is_finite()
            {
                break v;
            }
        }
        assert!(
            Instant::now() < end,
            "no per-namespace p50: {r:?}\n{}",
            ag.log()
        );
        std::thread::sleep(S);
    };
    let truth = client.median_ms() / 1000.0;
    eprintln!("namespace shop: recorded p50 {p50:.5} s, the pod's median round trip {truth:.5} s");
    assert!((0.0075..=0.015).contains(&p50), "recorded p50 {p50} s");
    for q in ["p90_5m", "p99_5m"] {
        let r = prom.query(&format!("kube_namespace:metro_tcp_rtt_seconds:{q}"));
        assert_eq!(r.len(), 1, "{q}: {r:?}");
    }
    // The container panel's two queries: one series each, named by the pod and the container.
    let mut seen = BTreeSet::new();
    for (title, e) in grafana_targets() {
        if !CONTAINER_PANELS.contains(&title.as_str()) {
            continue;
        }
        let r = prom.query(&grafana_expr(&e, "1m", "5m"));
        assert_eq!(r.len(), 1, "{title}: {e}: {r:?}");
        let m = &r[0]["metric"];
        for (k, v) in [
            ("pod_name", "checkout-api-7d9f"),
            ("kube_namespace", "shop"),
            ("container_name", "api"),
        ] {
            if m.get(k).is_some() {
                assert_eq!(m[k], v, "{e}");
                seen.insert(k);
            }
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    client.stop();
    drop(ag);
    drop(pod);
}
