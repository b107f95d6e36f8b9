//! `metro run`: the long-running agent that replaces go-metro. It reads an existing
//! go-metro.yaml, captures on each instance's interface with libpcap (or replays a capture
//! file), runs the same engine as `metro analyze`, and reports per (local address, remote
//! host) RTT statistics to DogStatsD (and, optionally, Prometheus and OTLP).
//!
//! Modules: [`config`] (YAML -> validated [`config::Config`]), [`filter`] (the kernel
//! filter), [`live`] (libpcap handles), [`capture`] (the per-instance capture loop),
//! [`netset`] (address sets of any size), [`resolve`] (watch list, local addresses, DNS
//! refresh), [`report`] (per-interval aggregation), [`flush`] (the flusher thread that owns
//! the sinks, and its messages), [`sinks`] (DogStatsD, Prometheus and OTLP: an encoder and
//! a transport each), [`log`] (rotating log file), [`run`] (threads, signals, reload).

pub mod capture;
pub mod config;
pub mod containers;
pub mod dedupe;
pub mod ebpf;
pub mod filter;
pub mod fleet;
pub mod flush;
pub mod http;
pub mod live;
pub mod log;
pub mod netset;
pub mod report;
pub mod resolve;
pub mod run;
pub mod samples;
pub mod sinks;
pub mod watch;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::anyhow;

/// go-metro's default configuration file, used when its flags are given without `-cfg`.
pub const GO_METRO_DEFAULT_CONFIG: &str = "/etc/dd-agent/checks.d/go-metro.yaml";

/// `metro run`: capture and report until stopped.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The configuration file (a go-metro.yaml works unchanged). Per instance, `capture:
    /// auto|ebpf|pcap` (default auto: in the kernel where it loads) and `threads: N`
    /// (default 1): an in-kernel capture's engines, each fed the connections of one shard
    /// of the flows (libpcap's path has one).
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: PathBuf,
    /// Log to this file (rotated by size) instead of stderr; overrides `log_file` and
    /// `log_to_file`.
    #[arg(long, value_name = "PATH")]
    pub log: Option<PathBuf>,
    /// Base capture filter (go-metro's `-f`, default `tcp`), combined with the watched
    /// addresses. The default is widened to what each instance's `protocols:` (tcp, quic,
    /// dns, icmp; all four unless listed) needs: `udp` for QUIC and DNS, `icmp or icmp6`
    /// for ICMP echo; a filter of your own is used as given. libpcap syntax, at most 1024
    /// bytes; an expression libpcap refuses, or one too large for the kernel on its own,
    /// stops metro at start with libpcap's message.
    #[arg(long, value_name = "FILTER")]
    pub filter: Option<String>,
    /// Also write every RTT sample as a JSON line to PATH (`-`: standard output), the
    /// lines `metro analyze --samples` writes, without `file` and frame numbers, with
    /// `iface`. Never slows capture nor holds start-up: lines a slow reader cannot take are
    /// dropped and the count is logged; a FIFO may get its reader later (the lines until
    /// then are counted as lost); a write error (a full disk) is logged with the path.
    #[arg(long, value_name = "PATH|-")]
    pub samples: Option<PathBuf>,
}

/// `metro check-config`: validate a configuration and print it with defaults filled in.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckConfigArgs {
    /// The configuration file to check.
    #[arg(value_name = "PATH")]
    pub config: PathBuf,
    /// The base capture filter `metro run --filter` would use: compiled with each instance's
    /// watch list as the agent would.
    #[arg(long, value_name = "FILTER")]
    pub filter: Option<String>,
}

/// Run the agent. Returns when SIGTERM or SIGINT arrives (after a final flush) or when every
/// instance was a capture file and all of them ended; an error means it could not start.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // The file's permitted capabilities made effective, before any thread starts.
    ebpf::raise_capabilities();
    // Before anything starts: a filter libpcap refuses (or cannot compile in bounded time)
    // is an error now, not a capture that sees nothing.
    if let Some(f) = &args.filter {
        filter::check_base(f).map_err(|e| anyhow!("--filter: {e}"))?;
    }
    run::run_agent(
        &args.config,
        run::Overrides {
            log: args.log,
            filter: args.filter,
            samples: args.samples,
        },
    )
}

/// Check a configuration: print the effective configuration (YAML) on stdout and every
/// warning on stderr. Fails on an error, including ones only this host can tell: an
/// interface that does not exist here, a watch list of this host's own addresses, a capture
/// file that cannot be read, or a capture filter libpcap refuses. Each live instance's
/// kernel filter is compiled as the agent would (for an Ethernet link, or Linux cooked
/// capture for `any`) and described on stderr.
pub fn check_config(args: CheckConfigArgs) -> anyhow::Result<()> {
    let base = args
        .filter
        .clone()
        .unwrap_or_else(|| config::DEFAULT_BASE_FILTER.to_string());
    filter::check_base(&base).map_err(|e| anyhow!("--filter: {e}"))?;
    let loaded = config::load(&args.config).map_err(|e| anyhow!("{e}"))?;
    let cfg = &loaded.config;
    let mut warnings = loaded.warnings.clone();
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let devices = live::device_names();
    let mut cache = HashMap::new();
    for (i, inst) in cfg.instances.iter().enumerate() {
        let name = format!("instances[{i}] ({})", inst.interface);
        let mut watch = watch::WatchList::new(inst.ips.clone());
        for w in resolve::resolve_all(&mut watch, &inst.hosts, &mut cache) {
            warnings.push(format!("{name}: {w}"));
        }
        match &inst.source {
            config::Source::Live => {
                if inst.interface != "any"
                    && !devices.is_empty()
                    && !devices.contains(&inst.interface)
                {
                    errors.push(format!(
                        "{name}: no interface named `{}` on this host; the interfaces that exist are: {}",
                        inst.interface,
                        live::interface_list().join(", ")
                    ));
                    continue;
                }
                let locals =
                    resolve::interface_addresses(Some(&inst.interface)).unwrap_or_default();
                let blocks = watch.blocks();
                if !blocks.is_empty()
                    && blocks
                        .iter()
                        .all(|b| b.is_host() && locals.contains(&b.addr))
                {
                    errors.push(format!(
                        "{name}: every watched address is an address of `{}` itself: `ips` and `hosts` must name remote hosts",
                        inst.interface
                    ));
                }
                // `any` is captured as cooked v2 (live.rs, for agent::dedupe).
                let linktype = if inst.interface == "any" {
                    metro_core::wire::linktype::LINUX_SLL2
                } else {
                    metro_core::wire::linktype::ETHERNET
                };
                let base = filter::instance_base(&base, inst.protocols);
                match filter::plan_dead(linktype, &base, &watch.set()) {
                    Ok(p) => notes.push(format!("{name}: capture filter: {}", p.describe())),
                    Err(e) => errors.push(format!("{name}: {e}")),
                }
            }
            config::Source::File(p) => {
                if p.is_dir() {
                    errors.push(format!(
                        "{name}: pcap: {} is a directory; expected a capture file",
                        p.display()
                    ));
                } else if let Err(e) = crate::pcap::CaptureReader::open(p) {
                    errors.push(format!("{name}: pcap: cannot read {}: {e}", p.display()));
                }
            }
        }
    }
    if let config::StatsdTarget::Udp { host, .. } = &cfg.statsd
        && host.parse::<std::net::IpAddr>().is_err()
        && let Err(e) = resolve::resolve_host(host)
    {
        warnings.push(format!("statsd_ip `{host}` does not resolve now: {e}"));
    }
    print!("{}", cfg.to_yaml());
    for n in &notes {
        eprintln!("{n}");
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Err(anyhow!(
            "{}: {} error(s)",
            args.config.display(),
            errors.len()
        ));
    }
    eprintln!(
        "{}: OK ({} warning(s))",
        args.config.display(),
        warnings.len()
    );
    Ok(())
}

/// A go-metro flag (`-cfg`, `--cfg`, `-log`, `-f`, `-st`), with its inline `=value`.
fn legacy_flag(s: &str) -> Option<(&str, Option<&str>)> {
    let body = s.strip_prefix("--").or_else(|| s.strip_prefix('-'))?;
    let (name, value) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    };
    matches!(name, "cfg" | "log" | "f" | "st").then_some((name, value))
}

/// Turn go-metro's command line (`-cfg=PATH`, `-cfg PATH`, `-log=PATH`, `-log PATH`,
/// `-f FILTER`, `-st[=BOOL]`, one or two dashes, as Go's flag package takes them) into
/// `run --config PATH [--log PATH] [--filter FILTER]`, so existing service files keep
/// working. Any other command line is returned unchanged. `args[0]` is the program name.
/// Without `-cfg`, go-metro's default path is used, as go-metro did.
pub fn translate_legacy_args(args: Vec<OsString>) -> Vec<OsString> {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return args;
    };
    if legacy_flag(first).is_none() {
        return args;
    }
    let mut cfg: Option<OsString> = None;
    let mut log: Option<OsString> = None;
    let mut filter: Option<OsString> = None;
    let mut rest: Vec<OsString> = Vec::new();
    let mut it = args.iter().skip(1);
    let mut flags_done = false;
    while let Some(a) = it.next() {
        let parsed = if flags_done {
            None
        } else {
            a.to_str().and_then(legacy_flag)
        };
        let Some((name, inline)) = parsed else {
            // Go's flag package stops at the first non-flag argument.
            flags_done = true;
            rest.push(a.clone());
            continue;
        };
        if name == "st" {
            // go-metro's "soften RTT" switch: metro reports raw samples; nothing to do.
            continue;
        }
        let value = match inline {
            Some(v) => Some(OsString::from(v)),
            None => it.next().cloned(),
        };
        let slot = match name {
            "cfg" => &mut cfg,
            "log" => &mut log,
            _ => &mut filter,
        };
        *slot = value;
    }
    let mut out = vec![args[0].clone(), "run".into(), "--config".into()];
    out.push(cfg.unwrap_or_else(|| GO_METRO_DEFAULT_CONFIG.into()));
    if let Some(l) = log {
        out.push("--log".into());
        out.push(l);
    }
    if let Some(f) = filter {
        out.push("--filter".into());
        out.push(f);
    }
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(args: &[&str]) -> Vec<String> {
        translate_legacy_args(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn legacy_spellings() {
        assert_eq!(
            t(&["metro", "-cfg=/etc/dd-agent/conf.d/go-metro.yaml"]),
            [
                "metro",
                "run",
                "--config",
                "/etc/dd-agent/conf.d/go-metro.yaml"
            ]
        );
        assert_eq!(
            t(&["metro", "-cfg", "/a.yaml"]),
            ["metro", "run", "--config", "/a.yaml"]
        );
        assert_eq!(
            t(&["metro", "--cfg", "/a.yaml", "-log=/var/log/x.log"]),
            [
                "metro",
                "run",
                "--config",
                "/a.yaml",
                "--log",
                "/var/log/x.log"
            ]
        );
        assert_eq!(
            t(&[
                "metro",
                "-log",
                "/x.log",
                "-cfg=/a.yaml",
                "-f",
                "tcp port 443"
            ]),
            [
                "metro",
                "run",
                "--config",
                "/a.yaml",
                "--log",
                "/x.log",
                "--filter",
                "tcp port 443"
            ]
        );
        assert_eq!(
            t(&[
                "metro",
                "-f=tcp and not port 22",
                "-st=false",
                "-cfg=/a.yaml"
            ]),
            [
                "metro",
                "run",
                "--config",
                "/a.yaml",
                "--filter",
                "tcp and not port 22"
            ]
        );
        assert_eq!(
            t(&["metro", "-log=/x.log"]),
            [
                "metro",
                "run",
                "--config",
                GO_METRO_DEFAULT_CONFIG,
                "--log",
                "/x.log"
            ]
        );
    }

    #[test]
    fn other_command_lines_unchanged() {
        for args in [
            &["metro"][..],
            &["metro", "run", "--config", "/a.yaml"],
            &["metro", "analyze", "-f", "x.pcap"],
            &["metro", "--help"],
            &["metro", "-V"],
            &["metro", "check-config", "/a.yaml"],
        ] {
            assert_eq!(t(args), args);
        }
    }

    #[test]
    fn run_args_parse() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: Cmd,
        }
        #[derive(clap::Subcommand)]
        enum Cmd {
            Run(RunArgs),
            CheckConfig(CheckConfigArgs),
        }
        let args = translate_legacy_args(
            [
                "metro",
                "-cfg=/a.yaml",
                "-log",
                "/l.log",
                "-f",
                "tcp port 80",
            ]
            .iter()
            .map(OsString::from)
            .collect(),
        );
        let Cmd::Run(r) = Cli::try_parse_from(args).unwrap().cmd else {
            panic!()
        };
        assert_eq!(r.config, PathBuf::from("/a.yaml"));
        assert_eq!(r.log, Some(PathBuf::from("/l.log")));
        assert_eq!(r.filter.as_deref(), Some("tcp port 80"));
        let Cmd::CheckConfig(c) = Cli::try_parse_from(["metro", "check-config", "/b.yaml"])
            .unwrap()
            .cmd
        else {
            panic!()
        };
        assert_eq!(c.config, PathBuf::from("/b.yaml"));
    }
}
