//! The configuration's behaviour end to end: text in, `Config`, warnings or errors out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::model::GroupBy;
use super::*;

/// The example from go-metro's documentation (shared/docs/go-metro.md), unchanged but for
/// the interface; `tests/it/agent_netns.rs` runs it.
const GO_METRO_DOC_EXAMPLE: &str = include_str!("../../../tests/data/go-metro-doc-example.yaml");

fn ok(text: &str) -> Loaded {
    match parse(text, "test.yaml") {
        Ok(l) => l,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn err(text: &str) -> ConfigError {
    match parse(text, "test.yaml") {
        Ok(l) => panic!("expected an error, got {:?}", l.config),
        Err(e) => e,
    }
}

fn udp(host: &str, port: u16) -> StatsdTarget {
    StatsdTarget::Udp {
        host: host.into(),
        port,
    }
}

#[test]
fn go_metro_doc_example() {
    let l = ok(GO_METRO_DOC_EXAMPLE);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = l.config;
    assert_eq!(c.snaplen, 512);
    assert_eq!(c.idle_ttl, Duration::from_secs(300));
    assert_eq!(c.exp_ttl, Duration::from_secs(60));
    assert_eq!(c.statsd, udp("127.0.0.1", 8125));
    assert!(c.log_to_file);
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.flush_interval, Duration::from_secs(10));
    assert_eq!(c.dns_refresh, Duration::from_secs(60));
    assert_eq!(c.baseline_window, Duration::from_secs(600));
    assert_eq!(c.instances.len(), 1);
    let i = &c.instances[0];
    assert_eq!(i.interface, "veth0");
    assert_eq!(i.source, Source::Live);
    assert_eq!(i.tags, vec!["env:prod".to_string()]);
    assert_eq!(i.ips, vec![Cidr::host("45.33.125.153".parse().unwrap())]);
    assert_eq!(i.hosts, vec!["app.datadoghq.com".to_string()]);
    assert_eq!(i.sample, None);
    assert_eq!(i.max_flows, DEFAULT_MAX_FLOWS as usize);
}

#[test]
fn go_metro_repository_example_with_config_list() {
    // go-metro.yaml.example in go-metro's repository: 4-space indents, `config:` list,
    // `warning` level.
    let l = ok("\
init_config:
    snaplen: 512
    idle_ttl: 300
    exp_ttl: 60
    statsd_ip: 127.0.0.1
    statsd_port: 8125
    log_to_file: true
    log_level: warning

config:
- interface: eth0
  tags:
    - foo:bar
  ips:
    - 192.168.0.1
  hosts:
    - somehost.somedomain.to
");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(l.config.log_level, LogLevel::Warn);
    assert_eq!(l.config.instances[0].tags, vec!["foo:bar".to_string()]);
}

#[test]
fn defaults() {
    let c = ok("instances:\n  - interface: eth0\n    ips: [10.0.0.1]\n").config;
    assert_eq!(c.snaplen, DEFAULT_SNAPLEN);
    assert_eq!(c.idle_ttl, Duration::from_secs(300));
    assert_eq!(c.exp_ttl, Duration::from_secs(60));
    assert_eq!(c.statsd, udp("127.0.0.1", 8125));
    assert!(!c.log_to_file);
    assert_eq!(c.log_file, PathBuf::from(DEFAULT_LOG_FILE));
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.buffer_size, DEFAULT_BUFFER_SIZE);
    assert_eq!(c.prometheus_listen, None);
}

#[test]
fn expired_ttl_is_read_too() {
    let c = ok(
        "init_config:\n  expired_ttl: 7\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n",
    )
    .config;
    assert_eq!(c.exp_ttl, Duration::from_secs(7));
    let l = ok(
        "init_config:\n  expired_ttl: 7\n  exp_ttl: 9\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n",
    );
    assert_eq!(l.config.exp_ttl, Duration::from_secs(9));
    assert_eq!(l.warnings.len(), 1);
}

#[test]
fn every_log_level_spelling() {
    for (s, want) in [
        ("trace", LogLevel::Trace),
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("warning", LogLevel::Warn),
        ("WARNING", LogLevel::Warn),
        ("error", LogLevel::Error),
        ("err", LogLevel::Error),
        ("critical", LogLevel::Critical),
        ("crit", LogLevel::Critical),
    ] {
        let c = ok(&format!(
            "init_config:\n  log_level: {s}\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n"
        ))
        .config;
        assert_eq!(c.log_level, want, "{s}");
    }
    let e = err(
        "init_config:\n  log_level: loud\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n",
    );
    assert_eq!(e.position, Some((2, 14)));
    assert!(e.to_string().contains("unknown log level `loud`"), "{e}");
}

#[test]
fn unknown_keys_warn_with_path_and_position() {
    let l = ok("\
init_config:
  snaplen: 256
  colour: blue
instances:
  - interface: eth0
    ips: [10.0.0.1]
    hostz: [a.example]
extra: 1
");
    assert_eq!(l.warnings.len(), 3, "{:?}", l.warnings);
    assert!(
        l.warnings[0].contains("test.yaml:3:3: unknown key `init_config.colour`"),
        "{:?}",
        l.warnings
    );
    assert!(
        l.warnings[1].contains("test.yaml:7:5: unknown key `instances[0].hostz`"),
        "{:?}",
        l.warnings
    );
    assert!(
        l.warnings[2].contains("unknown key `extra`"),
        "{:?}",
        l.warnings
    );
}

#[test]
fn yaml_errors_have_line_and_column() {
    // A type error: snaplen is not a number.
    let e = err(
        "init_config:\n  snaplen: lots\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n",
    );
    assert_eq!(e.position, Some((2, 12)), "{e}");
    assert_eq!(e.key.as_deref(), Some("init_config.snaplen"), "{e}");
    assert!(
        e.to_string()
            .starts_with("test.yaml:2:12: init_config.snaplen: expected a whole number"),
        "{e}"
    );
    // A syntax error: an unclosed flow sequence.
    let e = err("instances:\n  - interface: eth0\n    ips: [10.0.0.1\n");
    assert!(e.position.is_some(), "{e}");
    assert!(e.to_string().starts_with("test.yaml:"), "{e}");
    // A port out of range.
    let e = err(
        "init_config:\n  statsd_port: 70000\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n",
    );
    assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
    assert_eq!(e.key.as_deref(), Some("init_config.statsd_port"), "{e}");
    // A list where a map was expected.
    let e = err("instances:\n  - interface: eth0\n    ips: [10.0.0.1]\n    tags: {a: b}\n");
    assert_eq!(e.key.as_deref(), Some("instances[0].tags"), "{e}");
}

#[test]
fn ips_accept_v4_v6_and_cidr() {
    let c = ok("instances:\n  - interface: eth0\n    ips: [10.0.0.1, '2001:db8::1', 10.1.0.0/16, '2001:db8:1::/48']\n").config;
    let ips: Vec<String> = c.instances[0].ips.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        ips,
        ["10.0.0.1", "2001:db8::1", "10.1.0.0/16", "2001:db8:1::/48"]
    );
    // Unquoted IPv6 in block style parses as a string too.
    let c =
        ok("instances:\n  - interface: eth0\n    ips:\n      - 2001:db8::1\n      - fd00::/8\n")
            .config;
    assert_eq!(c.instances[0].ips.len(), 2);
}

#[test]
fn bad_ip_names_the_entry() {
    let e =
        err("instances:\n  - interface: eth0\n    ips:\n      - 10.0.0.1\n      - 10.0.0.300\n");
    assert_eq!(e.key.as_deref(), Some("instances[0].ips[1]"));
    assert_eq!(e.position, Some((5, 9)));
    assert!(
        e.message
            .contains("`10.0.0.300` is not an IPv4 or IPv6 address"),
        "{e}"
    );
    let e = err("instances:\n  - interface: eth0\n    ips: [10.0.0.0/33]\n");
    assert!(e.message.contains("prefix length must be 0 to 32"), "{e}");
}

#[test]
fn host_bits_are_cleared_with_a_warning() {
    let l = ok("instances:\n  - interface: eth0\n    ips: [10.0.0.5/24]\n");
    assert_eq!(l.config.instances[0].ips[0].to_string(), "10.0.0.0/24");
    assert_eq!(l.warnings.len(), 1);
}

#[test]
fn instance_needs_a_watch_list() {
    let e = err("instances:\n  - interface: eth0\n    tags: [a:b]\n");
    assert_eq!(e.key.as_deref(), Some("instances[0]"));
    assert!(e.message.contains("neither `ips` nor `hosts`"), "{e}");
}

#[test]
fn file_interface_needs_pcap() {
    let e = err("instances:\n  - interface: file\n    ips: [10.0.0.1]\n");
    assert_eq!(e.key.as_deref(), Some("instances[0].pcap"));
    let c =
        ok("instances:\n  - interface: file\n    pcap: /tmp/x.pcap\n    ips: [10.0.0.1]\n").config;
    assert_eq!(c.instances[0].source, Source::File("/tmp/x.pcap".into()));
}

#[test]
fn snaplen_floor() {
    let e =
        err("init_config:\n  snaplen: 64\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n");
    assert_eq!(e.key.as_deref(), Some("init_config.snaplen"));
    assert!(e.message.contains("at least 96"), "{e}");
}

#[test]
fn statsd_socket_and_hostname() {
    let c = ok("init_config:\n  statsd_socket: /var/run/datadog/dsd.socket\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n").config;
    assert_eq!(
        c.statsd,
        StatsdTarget::Unix("/var/run/datadog/dsd.socket".into())
    );
    let c = ok("init_config:\n  statsd_ip: dogstatsd.local\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n").config;
    assert_eq!(c.statsd, udp("dogstatsd.local", 8125));
}

#[test]
fn sampling_and_max_flows() {
    let c = ok("init_config:\n  max_flows: 500\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n    sample: true\n    sample_duration: 5\n    sample_interval: 20\n  - interface: eth1\n    ips: [10.0.0.1]\n    max_flows: 7\n    trust_ip_id: false\n").config;
    assert_eq!(
        c.instances[0].sample,
        Some(DutyCycle {
            duration: Duration::from_secs(5),
            interval: Duration::from_secs(20)
        })
    );
    assert_eq!(c.instances[0].max_flows, 500);
    assert_eq!(c.instances[1].max_flows, 7);
    assert!(c.instances[0].trust_ip_id, "trusted unless told otherwise");
    assert!(!c.instances[1].trust_ip_id);
}

#[test]
fn kube_labels_default_off_and_can_be_turned_on() {
    let c = ok("instances:\n  - interface: any\n    ips: [10.0.0.1]\n  - interface: eth1\n    ips: [10.0.0.1]\n    kube_labels: true\n").config;
    assert!(!c.instances[0].kube_labels);
    assert!(c.instances[1].kube_labels);
    assert!(c.to_yaml().contains("    kube_labels: true\n"));
}

#[test]
fn container_tags_default_on_and_can_be_turned_off() {
    let c = ok("instances:\n  - interface: any\n    ips: [10.0.0.1]\n  - interface: eth1\n    ips: [10.0.0.1]\n    container_tags: false\n").config;
    assert!(c.instances[0].container_tags);
    assert!(!c.instances[1].container_tags);
    assert!(c.to_yaml().contains("    container_tags: false\n"));
}

#[test]
fn durations_have_floors_and_ceilings() {
    let with = |key: &str, v: &str| {
        let (section, indent) = if key.starts_with("sample") {
            ("", "    ")
        } else {
            ("init_config:\n", "  ")
        };
        let inst = if key.starts_with("sample") {
            format!("    sample: true\n{indent}{key}: {v}\n")
        } else {
            String::new()
        };
        let init = if section.is_empty() {
            String::new()
        } else {
            format!("{section}{indent}{key}: {v}\n")
        };
        parse(
            &format!("{init}instances:\n  - interface: eth0\n    ips: [10.0.0.1]\n{inst}"),
            "test.yaml",
        )
    };
    for (key, bad) in [
        ("flush_interval", "1e-10"),
        ("flush_interval", "0"),
        ("flush_interval", "0.05"),
        ("flush_interval", ".nan"),
        ("flush_interval", "-1"),
        ("flush_interval", ".inf"),
        ("flush_interval", "1e300"),
        ("dns_refresh", "0.5"),
        ("baseline_window", "0.5"),
        ("baseline_window", "0"),
        ("baseline_window", ".inf"),
        ("idle_ttl", "0.001"),
        ("exp_ttl", "-0.1"),
        ("sample_duration", "1e-9"),
        ("sample_interval", "0.001"),
    ] {
        let e = with(key, bad).expect_err(&format!("{key}: {bad} accepted"));
        assert!(
            e.key.as_deref().is_some_and(|k| k.ends_with(key)),
            "{key}: {bad}: {e}"
        );
        assert!(
            e.message.contains("expected a number of seconds from"),
            "{e}"
        );
    }
    for (key, good) in [
        ("flush_interval", "0.1"),
        ("flush_interval", "1e9"),
        ("dns_refresh", "1"),
        ("baseline_window", "1"),
        ("baseline_window", "86400"),
        ("idle_ttl", "1"),
        ("exp_ttl", "0"),
        ("sample_duration", "0.1"),
        ("sample_interval", "0"),
    ] {
        if let Err(e) = with(key, good) {
            panic!("{key}: {good} refused: {e}");
        }
    }
}

#[test]
fn large_lists_with_duplicates_load_quickly() {
    // 40,000 entries, half of them repeats: deduplicated, order kept.
    let mut y = String::from("instances:\n  - interface: eth0\n    ips:\n");
    for i in 0..20_000u32 {
        let a = format!("      - 10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255);
        y.push_str(&a);
        y.push_str(&a);
    }
    let c = ok(&y).config;
    assert_eq!(c.instances[0].ips.len(), 20_000);
    assert_eq!(c.instances[0].ips[19_999].to_string(), "10.0.78.31");
}

#[test]
fn zero_idle_ttl_is_refused() {
    let e =
        err("init_config:\n  idle_ttl: 0\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n");
    assert_eq!(e.key.as_deref(), Some("init_config.idle_ttl"));
}

#[test]
fn empty_and_missing() {
    assert!(parse("", "x").is_err());
    assert!(parse("init_config:\n", "x").is_err());
    let e = load(Path::new("/nonexistent/metro.yaml")).unwrap_err();
    assert!(
        e.to_string().contains("cannot read the configuration file"),
        "{e}"
    );
}

#[test]
fn effective_yaml_round_trips() {
    let l = ok(GO_METRO_DOC_EXAMPLE);
    let y = l.config.to_yaml();
    let again = ok(&y);
    assert!(again.warnings.is_empty(), "{:?}\n{y}", again.warnings);
    assert_eq!(again.config, l.config, "{y}");
    let c = ok("init_config:\n  statsd_socket: /run/dsd.sock\n  prometheus_listen: '[::1]:9464'\n  flush_interval: 0.5\ninstances:\n  - interface: file\n    pcap: /x y.pcap\n    ips: ['2001:db8::/32']\n    sample: true\n").config;
    let y = c.to_yaml();
    assert_eq!(ok(&y).config, c, "{y}");
}

#[test]
fn cidr_contains() {
    let (c, _) = Cidr::parse("10.1.0.0/16").unwrap();
    assert!(c.contains("10.1.2.3".parse().unwrap()));
    assert!(!c.contains("10.2.0.1".parse().unwrap()));
    assert!(!c.contains("::1".parse().unwrap()));
    let (c, _) = Cidr::parse("0.0.0.0/0").unwrap();
    assert!(c.contains("1.2.3.4".parse().unwrap()));
    let (c, _) = Cidr::parse("2001:db8::/32").unwrap();
    assert!(c.contains("2001:db8:ffff::1".parse().unwrap()));
}

#[test]
fn fleet_keys_parse_and_bad_values_name_the_key() {
    let base = "instances:\n  - interface: eth0\n    ips: [10.0.0.0/8]\n";
    let c = ok(base).config;
    assert_eq!(c.fleet, FleetConfig::default());
    assert_eq!(c.instances[0].group_by, GroupBy::Host);
    let c = ok(&format!(
            "init_config:\n  distributions: true\n  distribution_sample_rate: 0.25\n  histogram_buckets: [0.001, 0.01, 0.1]\n  max_series: 50\n  otlp_endpoint: http://collector:4318/\n{base}    group_by: subnet\n    subnet_v4_prefix: 16\n"
        ))
        .config;
    assert_eq!(c.fleet.distribution_rate, Some(0.25));
    assert_eq!(c.fleet.buckets, vec![0.001, 0.01, 0.1]);
    assert_eq!(c.fleet.max_series, 50);
    assert_eq!(
        c.fleet.otlp_endpoint.as_deref(),
        Some("http://collector:4318")
    );
    assert_eq!(c.instances[0].group_by, GroupBy::Subnet { v4: 16, v6: 48 });
    // A rate without distributions: still off.
    let c = ok(&format!(
        "init_config:\n  distribution_sample_rate: 0.5\n{base}"
    ))
    .config;
    assert_eq!(c.fleet.distribution_rate, None);
    for (init, inst, key, says) in [
        (
            "  histogram_buckets: [0.1, 0.01]\n",
            "",
            "init_config.histogram_buckets",
            "must increase",
        ),
        (
            "  histogram_buckets: []\n",
            "",
            "init_config.histogram_buckets",
            "1 to 200",
        ),
        (
            "  histogram_buckets: [0, 1]\n",
            "",
            "init_config.histogram_buckets",
            "positive",
        ),
        (
            "  max_series: 0\n",
            "",
            "init_config.max_series",
            "1 to 65536",
        ),
        (
            "  max_series: 70000\n",
            "",
            "init_config.max_series",
            "1 to 65536",
        ),
        (
            "  distribution_sample_rate: 0\n",
            "",
            "init_config.distribution_sample_rate",
            "above 0",
        ),
        (
            "  distribution_sample_rate: 1.5\n",
            "",
            "init_config.distribution_sample_rate",
            "at most 1",
        ),
        (
            "  otlp_endpoint: https://x:4318\n",
            "",
            "init_config.otlp_endpoint",
            "https is not supported",
        ),
        (
            "  otlp_endpoint: http://x\n",
            "",
            "init_config.otlp_endpoint",
            "http://HOST:PORT",
        ),
        (
            "",
            "    group_by: cidr\n",
            "instances[0].group_by",
            "host, subnet or block",
        ),
        (
            "",
            "    subnet_v4_prefix: 33\n",
            "instances[0].subnet_v4_prefix",
            "0 to 32",
        ),
        (
            "",
            "    subnet_v6_prefix: 129\n",
            "instances[0].subnet_v6_prefix",
            "0 to 128",
        ),
    ] {
        let e = err(&format!("init_config:\n{init}{base}{inst}"));
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert!(e.message.contains(says), "{e}");
        assert!(e.position.is_some(), "{e}");
    }
}

/// The field names serde's derive hands `deserialize_struct` for `T`: the keys serde
/// reads (with any rename or alias), asked of serde itself through a deserializer that
/// stops there.
fn serde_fields<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    #[derive(Debug)]
    struct Fields(&'static [&'static str]);
    impl std::fmt::Display for Fields {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl std::error::Error for Fields {}
    impl serde::de::Error for Fields {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Fields(&[])
        }
    }
    struct Probe;
    impl<'de> serde::Deserializer<'de> for Probe {
        type Error = Fields;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    match T::deserialize(Probe) {
        Err(Fields(f)) => f,
        Ok(_) => panic!("the probe cannot produce a value"),
    }
}

#[test]
fn section_keys_are_the_keys_serde_reads() {
    assert_eq!(RawFile::KEYS, serde_fields::<RawFile>());
    assert_eq!(RawInit::KEYS, serde_fields::<RawInit>());
    assert_eq!(RawInstance::KEYS, serde_fields::<RawInstance>());
    // Both of go-metro's spellings of the linger time, and the older instance list.
    assert!(RawInit::KEYS.contains(&"exp_ttl") && RawInit::KEYS.contains(&"expired_ttl"));
    assert!(RawFile::KEYS.contains(&"config"));
    assert_eq!(RawInit::KEYS.len(), 21);
    assert_eq!(RawInstance::KEYS.len(), 18);
}

#[test]
fn every_key_serde_reads_is_known_to_the_warnings() {
    // Every key of every section present (null: the default), none warned about.
    let mut y = String::from("init_config:\n");
    for k in serde_fields::<RawInit>() {
        y.push_str(&format!("  {k}: ~\n"));
    }
    y.push_str("instances:\n  - interface: eth0\n    ips: [10.0.0.1]\n");
    for k in serde_fields::<RawInstance>() {
        if !matches!(*k, "interface" | "ips") {
            y.push_str(&format!("    {k}: ~\n"));
        }
    }
    y.push_str("config: ~\n");
    let l = ok(&y);
    assert!(l.warnings.is_empty(), "{:?}\n{y}", l.warnings);
    // And a key that is not one warns, at its position.
    let l = ok(&y.replace("  snaplen: ~", "  snap_len: ~"));
    assert_eq!(
        l.warnings,
        ["test.yaml:2:3: unknown key `init_config.snap_len` (ignored)"]
    );
}

#[test]
fn type_errors_say_what_the_key_takes() {
    let base = "instances:\n  - interface: eth0\n    ips: [10.0.0.1]\n";
    for (text, key, message, position) in [
        (
            format!("init_config:\n  log_to_file: maybe\n{base}"),
            Some("init_config.log_to_file"),
            "expected true or false",
            (2, 16),
        ),
        (
            format!("init_config:\n  flush_interval: soon\n{base}"),
            Some("init_config.flush_interval"),
            "expected a number",
            (2, 19),
        ),
        (
            format!("init_config:\n  statsd_port: abc\n{base}"),
            Some("init_config.statsd_port"),
            "expected a whole number from 0 to 65535",
            (2, 16),
        ),
        (
            format!("init_config:\n  max_flows: -5\n{base}"),
            Some("init_config.max_flows"),
            "expected a whole number",
            (2, 14),
        ),
        (
            format!("init_config:\n  histogram_buckets:\n    - 0.1\n    - lots\n{base}"),
            Some("init_config.histogram_buckets[1]"),
            "expected a number",
            (4, 7),
        ),
        (
            format!("init_config: [1, 2]\n{base}"),
            Some("init_config"),
            "expected `key: value` entries",
            (1, 14),
        ),
        (
            "instances:\n  interface: eth0\n".to_string(),
            Some("instances"),
            "expected a list (`- item` lines or `[a, b]`)",
            (2, 3),
        ),
        (
            "instances: [eth0]\n".to_string(),
            Some("instances[0]"),
            "expected `key: value` entries",
            (1, 13),
        ),
        (
            "instances:\n  - interface: [a]\n    ips: [10.0.0.1]\n".to_string(),
            Some("instances[0].interface"),
            "expected a single value (not a list or `key: value` entries)",
            (2, 16),
        ),
        (
            "instances:\n  - interface: eth0\n    ips: [10.0.0.1, [x]]\n".to_string(),
            Some("instances[0].ips[1]"),
            "expected a single value (not a list or `key: value` entries)",
            (3, 21),
        ),
        (
            "- a\n- b\n".to_string(),
            None,
            "expected `key: value` entries (`init_config:` and `instances:`)",
            (1, 1),
        ),
    ] {
        let e = err(&text);
        assert_eq!(e.key.as_deref(), key, "{e}\n{text}");
        assert_eq!(e.message, message, "{e}\n{text}");
        assert_eq!(e.position, Some(position), "{e}\n{text}");
        // The picture of the line labels the value with the same words.
        let snippet = e.snippet.as_deref().unwrap_or_default();
        assert!(snippet.contains(&format!("^ {message}")), "{snippet}");
    }
}

#[test]
fn syntax_errors_keep_the_parser_s_own_words() {
    // Not a type error: nothing of metro's to say but where.
    let e = err("instances:\n  - interface: eth0\n    ips: [10.0.0.1\n");
    assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
    assert!(
        !e.message.is_empty() && !e.message.starts_with("expected a"),
        "{e}"
    );
}

#[test]
fn a_breached_node_budget_names_metro_s_limit() {
    let mut y = String::from("instances:\n  - interface: eth0\n    ips:\n");
    for i in 0..50 {
        y.push_str(&format!("      - 10.0.0.{i}\n"));
    }
    let e = parse_within(&y, "test.yaml", 20).expect_err("over the budget");
    assert!(
        e.message
            .starts_with("the configuration is too large: metro reads at most 20 YAML nodes"),
        "{e}"
    );
    assert!(e.position.is_some(), "{e}");
    // The same text within the budget loads.
    assert_eq!(
        parse_within(&y, "test.yaml", 1000)
            .unwrap()
            .config
            .instances[0]
            .ips
            .len(),
        50
    );
}

/// Issue 22, item 8: every value `run` would fail on, or that would make its feature
/// silently useless, is refused at load (check-config and run alike), naming the key and
/// its position.
#[test]
fn values_run_cannot_use_are_refused_with_their_position() {
    let base = "instances:\n  - interface: eth0\n    ips: [10.0.0.0/8]\n";
    let long_socket = format!("/run/{}/dsd.socket", "d".repeat(100));
    let long_label = "a".repeat(64);
    let long_name = format!("{}.example", "abcdefghi.".repeat(26));
    for (init, inst, key, line, says) in [
        // Where run cannot listen or nobody can scrape.
        (
            "  prometheus_listen: 8.8.8.8:9464\n",
            "",
            "init_config.prometheus_listen",
            2,
            "8.8.8.8 is not an address of this host",
        ),
        (
            "  prometheus_listen: '[2001:db8::1]:9464'\n",
            "",
            "init_config.prometheus_listen",
            2,
            "not an address of this host",
        ),
        (
            "  prometheus_listen: 127.0.0.1:0\n",
            "",
            "init_config.prometheus_listen",
            2,
            "port 0",
        ),
        // Pushes that would all fail.
        (
            "  otlp_endpoint: http://user:pw@host:4318\n",
            "",
            "init_config.otlp_endpoint",
            2,
            "credentials",
        ),
        (
            "  otlp_endpoint: 'http://col lector:4318'\n",
            "",
            "init_config.otlp_endpoint",
            2,
            "whitespace",
        ),
        (
            "  otlp_endpoint: 'http://collector:4318/v1 /x'\n",
            "",
            "init_config.otlp_endpoint",
            2,
            "whitespace",
        ),
        (
            "  otlp_endpoint: http://collector:0\n",
            "",
            "init_config.otlp_endpoint",
            2,
            "not a port from 1 to 65535",
        ),
        (
            "  otlp_endpoint: http://collector:4318/p?token=1\n",
            "",
            "init_config.otlp_endpoint",
            2,
            "query",
        ),
        (
            "  otlp_endpoint: ftp://collector:4318\n",
            "",
            "init_config.otlp_endpoint",
            2,
            "scheme must be http://",
        ),
        (
            "  otlp_endpoint: http://coll_ector!:4318\n",
            "",
            "init_config.otlp_endpoint",
            2,
            "`!` cannot be in a host name",
        ),
        (
            "  otlp_endpoint: 'http://[::1:4318'\n",
            "",
            "init_config.otlp_endpoint",
            2,
            "not an IPv6 address",
        ),
        // Rates and bounds that round to nothing.
        (
            "  distribution_sample_rate: 1e-300\n",
            "",
            "init_config.distribution_sample_rate",
            2,
            "1e-300 is below 1e-6: a series would send a value only after 1e300 samples",
        ),
        (
            "  distribution_sample_rate: 0.0000005\n",
            "",
            "init_config.distribution_sample_rate",
            2,
            "5e-7 is below 1e-6",
        ),
        (
            "  histogram_buckets: [1e-12, 0.001]\n",
            "",
            "init_config.histogram_buckets",
            2,
            "capture clock's resolution",
        ),
        (
            "  histogram_buckets: [0.001, 1e12]\n",
            "",
            "init_config.histogram_buckets",
            2,
            "1000000000 s",
        ),
        // Sizes too small to hold one record.
        (
            "  snaplen: 262144\n  buffer_size: 65536\n",
            "",
            "init_config.buffer_size",
            3,
            "cannot hold one packet of snaplen 262144 bytes",
        ),
        // DogStatsD targets every send to would fail.
        (
            &format!("  statsd_socket: {long_socket}\n"),
            "",
            "init_config.statsd_socket",
            2,
            "longer than a Unix socket address holds",
        ),
        (
            "  statsd_ip: 255.255.255.255\n",
            "",
            "init_config.statsd_ip",
            2,
            "broadcast",
        ),
        (
            "  statsd_ip: 127.0.0.1:8125\n",
            "",
            "init_config.statsd_ip",
            2,
            "a port goes in its own key",
        ),
        (
            "  statsd_ip: dd-agent..local\n",
            "",
            "init_config.statsd_ip",
            2,
            "empty label",
        ),
        (
            "  statsd_port: 0\n",
            "",
            "init_config.statsd_port",
            2,
            "1 to 65535",
        ),
        // Names no resolver or libpcap can take.
        (
            "",
            &format!("    hosts: [{long_label}.example.com]\n"),
            "instances[0].hosts[0]",
            5,
            "more than a host name's 63",
        ),
        (
            "",
            &format!("    hosts: [{long_name}]\n"),
            "instances[0].hosts[0]",
            5,
            "longer than a host name can be (253)",
        ),
        (
            "",
            "    hosts: [db.example.com, -db.example.com]\n",
            "instances[0].hosts[1]",
            5,
            "begins or ends with `-`",
        ),
        (
            "",
            "    hosts: ['bücher.example']\n",
            "instances[0].hosts[0]",
            5,
            "xn--",
        ),
    ] {
        let text = format!("init_config:\n{init}{base}{inst}");
        let e = err(&text);
        assert_eq!(e.key.as_deref(), Some(key), "{e}\n{text}");
        assert!(e.message.contains(says), "{e}\n{text}");
        assert_eq!(e.position.map(|p| p.0), Some(line), "{e}\n{text}");
        assert!(
            e.to_string().starts_with(&format!("test.yaml:{line}:")),
            "{e}"
        );
    }
    // Watch-list entries no TCP packet can match.
    for (entry, says) in [
        ("224.0.0.0/4", "multicast"),
        ("239.1.2.3", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("0.0.0.0", "0.0.0.0/0"),
        ("'::'", "0.0.0.0/0"),
    ] {
        let e = err(&format!(
            "instances:\n  - interface: eth0\n    ips: [10.0.0.0/8,\n          {entry}]\n"
        ));
        assert_eq!(e.key.as_deref(), Some("instances[0].ips[1]"), "{e}");
        assert!(e.message.contains(says), "{e}");
        assert!(e.to_string().starts_with("test.yaml:4:11: "), "{e}");
    }
    // Blocks that hold peers too stay.
    ok("instances:\n  - interface: eth0\n    ips: [0.0.0.0/0, '::/0', 192.0.0.0/2]\n");
    // An interface name longer than the kernel's.
    let e = err("instances:\n  - interface: eth0-with-a-long-name\n    ips: [10.0.0.0/8]\n");
    assert_eq!(e.key.as_deref(), Some("instances[0].interface"), "{e}");
    assert!(e.to_string().starts_with("test.yaml:2:16: "), "{e}");

    // What run can use still loads.
    let c = ok(&format!(
        "init_config:\n  prometheus_listen: 0.0.0.0:9464\n  otlp_endpoint: 'http://[::1]:4318/otlp/'\n  distribution_sample_rate: 0.000001\n  distributions: true\n  histogram_buckets: [0.000000001, 1000000000]\n  snaplen: 262144\n  buffer_size: 266240\n  statsd_ip: dd_agent.svc.cluster.local.\n{base}    hosts: [xn--bcher-kva.example, 2001:db8::1, db-1.example.com]\n"
    ))
    .config;
    assert_eq!(c.prometheus_listen, Some("0.0.0.0:9464".parse().unwrap()));
    assert_eq!(
        c.fleet.otlp_endpoint.as_deref(),
        Some("http://[::1]:4318/otlp")
    );
    assert_eq!(c.fleet.distribution_rate, Some(1e-6));
    assert_eq!(c.buffer_size, 266240);
    for listen in [
        "127.0.0.1:9464",
        "127.0.0.2:9464",
        "'[::]:9464'",
        "'[::1]:9464'",
    ] {
        let c = ok(&format!(
            "init_config:\n  prometheus_listen: {listen}\n{base}"
        ))
        .config;
        assert!(c.prometheus_listen.is_some(), "{listen}");
    }
}

#[test]
fn protocols_default_to_all_four_and_bad_lists_name_the_entry() {
    let base = "instances:\n  - interface: eth0\n    ips: [10.0.0.0/8]\n";
    assert_eq!(ok(base).config.instances[0].protocols, Protocols::ALL);
    let c = ok(&format!("{base}    protocols: [dns, icmp]\n")).config;
    let p = c.instances[0].protocols;
    assert_eq!(p.names(), ["dns", "icmp"]);
    assert!(p.kinds().contains(metro_core::sample::Kind::Dns));
    assert!(!p.kinds().contains(metro_core::sample::Kind::Seq));
    assert!(!p.kinds().contains(metro_core::sample::Kind::QuicSpin));
    for (inst, key, says, positioned) in [
        (
            "    protocols: [tcp, http]\n",
            "instances[0].protocols[1]",
            "expected tcp, quic, dns or icmp, found `http`",
            true,
        ),
        (
            "    protocols: [dns, dns]\n",
            "instances[0].protocols[1]",
            "`dns` is listed twice",
            true,
        ),
        (
            "    protocols: []\n",
            "instances[0].protocols",
            "empty",
            false,
        ),
    ] {
        let e = err(&format!("{base}{inst}"));
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert!(e.message.contains(says), "{e}");
        assert_eq!(e.position.is_some(), positioned, "{e}");
    }
}

#[test]
fn threads_default_to_one_and_are_bounded() {
    let c = ok("instances:\n  - interface: eth0\n    ips: [10.0.0.1]\n  - interface: eth1\n    ips: [10.0.0.1]\n    threads: 4\n").config;
    assert_eq!((c.instances[0].threads, c.instances[1].threads), (1, 4));
    for bad in ["0", "65"] {
        let e = err(&format!(
            "instances:\n  - interface: eth0\n    ips: [10.0.0.1]\n    threads: {bad}\n"
        ))
        .to_string();
        assert!(
            e.contains("instances[0].threads") && e.contains("expected 1 to 64"),
            "{e}"
        );
    }
}
