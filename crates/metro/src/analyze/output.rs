//! Rendering a [`Report`]: text tables, one JSON document, the closing summary, and the
//! per-sample JSON lines. Everything writes to any `io::Write`, so tests render into a Vec.

use std::io::{self, Write};

use metro_core::aggregate::Stats;
use metro_core::proto::{ProtoCounters, rcode_name};
use metro_core::sample::{Kind, Sample};
use serde_json::{Value, json};

use super::{FlowReport, Report};

/// Append one sample as a JSON line (no allocation beyond `buf`'s growth).
pub fn sample_line(buf: &mut Vec<u8>, file: &str, s: &Sample) {
    buf.extend_from_slice(b"{\"file\":");
    // serde_json escapes the path correctly; paths are rarely odd, this is off the hot path
    // for everything but --samples.
    let _ = serde_json::to_writer(&mut *buf, file);
    let _ = write!(
        buf,
        ",\"frame\":{},\"open_frame\":{},",
        s.frame, s.open_frame
    );
    sample_line_tail(buf, s);
}

/// The fields every sample line ends with, from `ts` to the closing brace and newline:
/// `metro analyze` writes the file and frames before them, `metro run --samples` the
/// interface.
pub fn sample_line_tail(buf: &mut Vec<u8>, s: &Sample) {
    let secs = s.ts.div_euclid(1_000_000_000);
    let nanos = s.ts.rem_euclid(1_000_000_000);
    let _ = writeln!(
        buf,
        "\"ts\":{}.{:09},\"kind\":\"{}\",\"src\":\"{}\",\"sport\":{},\"dst\":\"{}\",\"dport\":{},\"rtt_ms\":{}}}",
        secs,
        nanos,
        s.kind.name(),
        s.responder.ip(),
        s.responder.port(),
        s.peer.ip(),
        s.peer.port(),
        s.rtt_ms(),
    );
}

fn kinds_list(kinds: &[u64; Kind::COUNT]) -> String {
    let names: Vec<&str> = Kind::ALL
        .iter()
        .filter(|k| kinds[k.index()] > 0)
        .map(|k| k.name())
        .collect();
    names.join(",")
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn stats_cells(s: &Stats) -> [String; 7] {
    let [p50, p90, p99] = s.quantiles([0.5, 0.9, 0.99]);
    [
        s.count().to_string(),
        ms(s.min()),
        ms(p50),
        ms(p90),
        ms(p99),
        ms(s.max()),
        ms(s.jitter()),
    ]
}

fn write_table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    // One line buffer for the whole table, each cell padded in place (as `{:<w$}` and
    // `{:>w$}` pad: to `w` characters), the line's trailing spaces trimmed.
    let mut line = String::new();
    write_line(out, &widths, &mut line, header)?;
    for r in rows {
        write_line(out, &widths, &mut line, r)?;
    }
    Ok(())
}

fn write_line(
    out: &mut dyn Write,
    widths: &[usize],
    line: &mut String,
    cells: &[impl AsRef<str>],
) -> io::Result<()> {
    line.clear();
    for (i, c) in cells.iter().enumerate() {
        let c = c.as_ref();
        if i > 0 {
            line.push_str("  ");
        }
        let pad = std::iter::repeat_n(' ', widths[i].saturating_sub(c.chars().count()));
        // First column and the trailing text columns left-aligned, numbers right-aligned.
        if i == 0 || i + 1 == cells.len() {
            line.push_str(c);
            line.extend(pad);
        } else {
            line.extend(pad);
            line.push_str(c);
        }
    }
    out.write_all(line.trim_end().as_bytes())?;
    out.write_all(b"\n")
}

/// One of the default report's tables: a row per item, named by its first column (`first`
/// in the header), then its statistics and the kinds of its samples.
fn write_stats_table<'a>(
    out: &mut dyn Write,
    first: &str,
    items: impl Iterator<Item = (String, &'a Stats, &'a [u64; Kind::COUNT])>,
) -> io::Result<()> {
    let rows: Vec<Vec<String>> = items
        .map(|(name, stats, kinds)| {
            let mut row = vec![name];
            row.extend(stats_cells(stats));
            row.push(kinds_list(kinds));
            row
        })
        .collect();
    write_table(
        out,
        &[
            first, "samples", "min", "p50", "p90", "p99", "max", "jitter", "kinds",
        ],
        &rows,
    )
}

/// The default report: one row per responder, most samples first.
pub fn render_table(out: &mut dyn Write, report: &Report, flows: bool) -> io::Result<()> {
    if report.responders.is_empty() {
        writeln!(out, "no RTT samples")?;
    }
    // One table per protocol, TCP's first (as it always was). Responders beyond
    // --max-responders (of any protocol): one `other` row, last in the last table.
    let tables: Vec<(&str, &str, &str)> = [
        (
            "tcp",
            "RTT by responder (ms; the responder sends the closing packet)",
            "responder",
        ),
        (
            "quic",
            "QUIC RTT by responder (ms; handshake and spin-bit samples)",
            "responder",
        ),
        ("dns", "DNS response time by server (ms)", "server"),
        ("icmp", "ICMP echo RTT by target (ms)", "target"),
    ]
    .into_iter()
    .filter(|(protocol, _, _)| report.responders.iter().any(|r| r.protocol == *protocol))
    .collect();
    for (i, (protocol, title, column)) in tables.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "{title}")?;
        let other = report
            .other
            .iter()
            .filter(|_| i + 1 == tables.len())
            .map(|r| ("other".to_string(), &r.stats, &r.kinds));
        write_stats_table(
            out,
            column,
            report
                .responders
                .iter()
                .filter(|r| r.protocol == *protocol)
                .map(|r| (r.addr.to_string(), &r.stats, &r.kinds))
                .chain(other),
        )?;
    }
    if flows {
        writeln!(out)?;
        writeln!(out, "RTT by connection (ms)")?;
        let multi = report.files.len() > 1;
        write_stats_table(
            out,
            "responder <- peer",
            report.flows.iter().map(|f: &FlowReport| {
                let name = if multi {
                    format!("#{} {} <- {}", f.file + 1, f.responder, f.peer)
                } else {
                    format!("{} <- {}", f.responder, f.peer)
                };
                (name, &f.stats, &f.kinds)
            }),
        )?;
    }
    Ok(())
}

fn stats_json(s: &Stats) -> Value {
    let [p50, p90, p99] = s.quantiles([0.5, 0.9, 0.99]);
    json!({
        "samples": s.count(),
        "min_ms": s.min(),
        "mean_ms": s.mean(),
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": s.max(),
        "jitter_ms": s.jitter(),
        "last_ms": s.last(),
    })
}

fn kinds_json(k: &[u64; Kind::COUNT]) -> Value {
    Value::Object(
        Kind::ALL
            .iter()
            .map(|kind| (kind.name().to_string(), json!(k[kind.index()])))
            .collect(),
    )
}

fn tcp_kinds_json(k: &[u64; 3]) -> Value {
    json!({"seq": k[0], "handshake": k[1], "ts": k[2]})
}

fn proto_json(p: &ProtoCounters) -> Value {
    let rcodes: serde_json::Map<String, Value> = p
        .dns_rcodes
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| (rcode_name(i as u8).to_string(), json!(n)))
        .collect();
    json!({
        "datagrams": p.datagrams,
        "samples": {
            "quic_handshake": p.samples[Kind::QuicHandshake.index()],
            "quic_spin": p.samples[Kind::QuicSpin.index()],
            "dns": p.samples[Kind::Dns.index()],
            "icmp": p.samples[Kind::Icmp.index()],
        },
        "non_positive_intervals": p.non_positive,
        "implausible": p.implausible,
        "dns": {
            "responses_by_rcode": rcodes,
            "timeouts": p.dns_timeouts,
            "pending_at_end": p.dns_pending_at_end,
            "unmatched_responses": p.dns_unmatched,
            "repeated_queries": p.dns_repeated,
            "evicted_table_full": p.dns_evicted,
        },
        "icmp": {
            "timeouts": p.icmp_timeouts,
            "pending_at_end": p.icmp_pending_at_end,
            "unmatched_replies": p.icmp_unmatched,
            "repeated_requests": p.icmp_repeated,
            "evicted_table_full": p.icmp_evicted,
        },
        "quic": {
            "initials": p.quic_initials,
            "connections": p.quic_connections,
            "unanswered": p.quic_unanswered,
            "shed_table_full": p.quic_shed,
            "not_followed_table_full": p.quic_full,
            "spinning": p.quic_spinning,
            "spin_constant": p.quic_spin_constant,
            "spin_invalid": p.quic_spin_invalid,
            "spin_edges_rejected": {
                "no_reflection": p.quic_spin_rejected[0],
                "below_floor": p.quic_spin_rejected[1],
                "idle": p.quic_spin_rejected[2],
            },
        },
    })
}

/// The whole report as one JSON document.
pub fn render_json(out: &mut dyn Write, report: &Report, flows: bool) -> io::Result<()> {
    let mut doc = json!({
        "files": report.files.iter().map(|f| json!({
            "path": f.path.display().to_string(),
            "records": f.records,
            "error": f.error,
        })).collect::<Vec<_>>(),
        "responders": report.responders.iter().map(|r| {
            let mut v = stats_json(&r.stats);
            v["responder"] = json!(r.addr.to_string());
            v["protocol"] = json!(r.protocol);
            v["kinds"] = kinds_json(&r.kinds);
            v
        }).collect::<Vec<_>>(),
        "summary": summary_json(report),
    });
    // Only when some responder was beyond the cap: the report of a capture within it is
    // what it always was.
    if let Some(r) = &report.other {
        let mut v = stats_json(&r.stats);
        v["kinds"] = kinds_json(&r.kinds);
        doc["other_responders"] = v;
        doc["summary"]["max_responders"] = json!(report.max_responders);
    }
    if flows {
        doc["flows"] = Value::Array(
            report
                .flows
                .iter()
                .map(|f| {
                    let mut v = stats_json(&f.stats);
                    v["file"] = json!(report.files[f.file].path.display().to_string());
                    v["responder"] = json!(f.responder.ip().to_string());
                    v["responder_port"] = json!(f.responder.port());
                    v["peer"] = json!(f.peer.ip().to_string());
                    v["peer_port"] = json!(f.peer.port());
                    v["kinds"] = kinds_json(&f.kinds);
                    v
                })
                .collect(),
        );
    }
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

fn summary_json(report: &Report) -> Value {
    let s = &report.summary;
    let e = &s.engine;
    let mut v = summary_counters_json(report);
    // Only once the flow table shed a connection awaiting its handshake's ACK (a flood).
    if e.handshakes_cached > 0 {
        v["handshake_cache"] = json!({
            "cached": e.handshakes_cached,
            "resumed": e.handshakes_resumed,
            "overwritten": e.handshakes_overwritten,
        });
    }
    v
}

fn summary_counters_json(report: &Report) -> Value {
    let s = &report.summary;
    let e = &s.engine;
    json!({
        "records": s.records,
        "tcp_packets": s.tcp_packets,
        "undecodable": s.undecodable,
        "unsupported_linktypes": s.unsupported_linktypes.iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
        "flows": e.flows_created,
        "samples": tcp_kinds_json(&e.samples),
        "proto": proto_json(&s.proto),
        "ambiguous_dropped": e.ambiguous,
        "retransmissions": e.retransmits,
        "duplicate_frames": e.duplicates,
        "duplicate_frames_by_evidence": {
            "ip_id": e.duplicates_wide[0],
            "tsval": e.duplicates_wide[1],
            "handshake": e.duplicates_wide[2],
        },
        "retransmitted_but_timed": {
            "tsecr_retransmission": e.disambiguated[0],
            "tsecr_original": e.disambiguated[1],
            "dsack": e.disambiguated[2],
            "ack_inside": e.disambiguated[3],
            "dsack_answers_retransmission": e.disambiguated[4],
        },
        "non_positive_intervals": e.non_positive,
        "implausible_over_120s": e.implausible,
        "flows_confirmed": e.flows_confirmed,
        "evicted": {
            "flows_table_full": e.flows_evicted_full,
            "flows_unconfirmed_shed": e.flows_shed_unconfirmed,
            "flows_confirmed_evicted": e.flows_evicted_confirmed,
            "flows_idle": e.flows_expired_idle,
            "flows_closed": e.flows_expired_closed,
            "pending_segments": e.segments_evicted,
            "pending_tsvals": e.tsvals_evicted,
            "tsvals_expired": e.tsvals_expired,
        },
    })
}

/// The closing summary of counters (for standard error).
pub fn render_summary(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let s = &report.summary;
    let e = &s.engine;
    let undecodable: u64 = s.undecodable.values().sum();
    writeln!(
        out,
        "summary: {} files, {} records, {} TCP packets, {} undecodable, {} connections",
        report.files_read(),
        s.records,
        s.tcp_packets,
        undecodable,
        e.flows_created
    )?;
    if undecodable > 0 {
        let parts: Vec<String> = s
            .undecodable
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(out, "  undecodable: {}", parts.join(", "))?;
    }
    if let Some(r) = &report.other {
        writeln!(
            out,
            "  responders: the first {} have rows of their own (--max-responders); the {} samples of the others are in the `other` row",
            report.max_responders,
            r.stats.count()
        )?;
    }
    if s.non_packets > 0 {
        writeln!(
            out,
            "  not packets (pcapng custom or journal blocks, numbered as frames): {}",
            s.non_packets
        )?;
    }
    writeln!(
        out,
        "  samples: seq {}, handshake {}, ts {}; ambiguous dropped {}; retransmissions {}; duplicate frames {}; zero or negative intervals {}; implausible (> max RTT) {}",
        e.samples[0],
        e.samples[1],
        e.samples[2],
        e.ambiguous,
        e.retransmits,
        e.duplicates,
        e.non_positive,
        e.implausible
    )?;
    let (wide, timed) = (
        e.duplicates_wide.iter().sum::<u64>(),
        e.disambiguated.iter().sum::<u64>(),
    );
    if wide + timed > 0 {
        writeln!(
            out,
            "  accuracy: late copies recognised by IP ID {}, TSval {}, handshake {}; retransmitted ranges timed by TSecr {} (of the retransmission {}, of the original {}), DSACK {} (of the original {}, of a spurious retransmission {}), ACK inside {}",
            e.duplicates_wide[0],
            e.duplicates_wide[1],
            e.duplicates_wide[2],
            e.disambiguated[0] + e.disambiguated[1],
            e.disambiguated[0],
            e.disambiguated[1],
            e.disambiguated[2] + e.disambiguated[4],
            e.disambiguated[2],
            e.disambiguated[4],
            e.disambiguated[3]
        )?;
    }
    writeln!(
        out,
        "  evicted: flows (table full) {} (unconfirmed shed {}, confirmed {}), pending segments {}, pending tsvals {}; expired: flows idle {}, closed {}, tsvals {}",
        e.flows_evicted_full,
        e.flows_shed_unconfirmed,
        e.flows_evicted_confirmed,
        e.segments_evicted,
        e.tsvals_evicted,
        e.flows_expired_idle,
        e.flows_expired_closed,
        e.tsvals_expired
    )?;
    if e.handshakes_cached > 0 {
        writeln!(
            out,
            "  handshake cache: {} SYNs or SYN/ACKs of shed connections kept, {} of them resumed (answered or sent again), {} overwritten",
            e.handshakes_cached, e.handshakes_resumed, e.handshakes_overwritten
        )?;
    }
    let p = &s.proto;
    let n = |k: Kind| p.samples[k.index()];
    if p.datagrams > 0 || n(Kind::Dns) > 0 {
        let rcodes: Vec<String> = p
            .dns_rcodes
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| format!("{} {n}", rcode_name(i as u8)))
            .collect();
        writeln!(
            out,
            "  dns: {} responses ({}); timeouts {}, pending at the end {}, unmatched responses {}, repeated queries {}, dropped (table full) {}",
            n(Kind::Dns),
            if rcodes.is_empty() {
                "none".to_string()
            } else {
                rcodes.join(", ")
            },
            p.dns_timeouts,
            p.dns_pending_at_end,
            p.dns_unmatched,
            p.dns_repeated,
            p.dns_evicted
        )?;
    }
    if p.datagrams > 0 {
        writeln!(
            out,
            "  icmp: {} echo replies; timeouts {}, pending at the end {}, unmatched replies {}, repeated requests {}, dropped (table full) {}",
            n(Kind::Icmp),
            p.icmp_timeouts,
            p.icmp_pending_at_end,
            p.icmp_unmatched,
            p.icmp_repeated,
            p.icmp_evicted
        )?;
        writeln!(
            out,
            "  quic: {} connections answered of {} client Initials; samples handshake {}, spin {}; spinning {}, spin constant {}, spin invalid (greased or one-sided) {}; spin edges rejected: no reflection {}, below the handshake floor {}, idle {}; shed (table full) {}, not followed (table full) {}",
            p.quic_connections,
            p.quic_initials,
            n(Kind::QuicHandshake),
            n(Kind::QuicSpin),
            p.quic_spinning,
            p.quic_spin_constant,
            p.quic_spin_invalid,
            p.quic_spin_rejected[0],
            p.quic_spin_rejected[1],
            p.quic_spin_rejected[2],
            p.quic_shed,
            p.quic_full
        )?;
    }
    Ok(())
}

/// Text made safe inside HTML elements.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// `metro analyze --report`: one self-contained page (no script, no stylesheet or font to
/// fetch; the plot is inline SVG) with the table, the summary, any file errors and the plot.
pub fn html_page(
    files: &[std::path::PathBuf],
    table: &str,
    summary: &str,
    errors: &str,
    svg: &str,
) -> String {
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let title = html_escape(&format!("metro analyze: {}", names.join(", ")));
    let errors = if errors.is_empty() {
        String::new()
    } else {
        format!(
            "<h2>Errors</h2>\n<pre class=\"errors\">{}</pre>\n",
            html_escape(errors)
        )
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         <style>body{{font-family:sans-serif;margin:1.5em;color:#222}}pre{{background:#f6f6f6;padding:.8em;overflow-x:auto}}\
         .errors{{color:#a00}}svg{{max-width:100%;height:auto}}</style>\n</head>\n<body>\n\
         <h1>{title}</h1>\n<h2>RTT by responder</h2>\n<pre class=\"table\">{}</pre>\n\
         <h2>Summary</h2>\n<pre class=\"summary\">{}</pre>\n{errors}<h2>Plot</h2>\n{svg}\n</body>\n</html>\n",
        html_escape(table),
        html_escape(summary),
    )
}
