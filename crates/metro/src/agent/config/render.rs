//! `check-config`'s output: the effective configuration written back as YAML that metro
//! itself accepts, every default filled in.

use std::time::Duration;

use super::model::{Config, GroupBy, Source, StatsdTarget};

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

fn yaml_str(s: &str) -> String {
    // Quote everything that is not obviously a plain scalar.
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        && !s.starts_with(['-', ':', '@'])
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "null" | "on" | "off" | "~"
        )
        && s.parse::<f64>().is_err();
    if plain {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

impl Config {
    /// The effective configuration as YAML that metro itself accepts, defaults filled in.
    pub fn to_yaml(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(o, "init_config:");
        let _ = writeln!(o, "  snaplen: {}", self.snaplen);
        let _ = writeln!(o, "  idle_ttl: {}", secs(self.idle_ttl));
        let _ = writeln!(o, "  exp_ttl: {}", secs(self.exp_ttl));
        match &self.statsd {
            StatsdTarget::Udp { host, port } => {
                let _ = writeln!(o, "  statsd_ip: {}", yaml_str(host));
                let _ = writeln!(o, "  statsd_port: {port}");
            }
            StatsdTarget::Unix(p) => {
                let _ = writeln!(o, "  statsd_socket: {}", yaml_str(&p.display().to_string()));
            }
        }
        let _ = writeln!(o, "  flush_interval: {}", secs(self.flush_interval));
        let _ = writeln!(o, "  baseline_window: {}", secs(self.baseline_window));
        let _ = writeln!(o, "  dns_refresh: {}", secs(self.dns_refresh));
        let _ = writeln!(o, "  log_to_file: {}", self.log_to_file);
        let _ = writeln!(
            o,
            "  log_file: {}",
            yaml_str(&self.log_file.display().to_string())
        );
        let _ = writeln!(o, "  log_level: {}", self.log_level.name());
        let _ = writeln!(o, "  buffer_size: {}", self.buffer_size);
        match self.prometheus_listen {
            Some(a) => {
                let _ = writeln!(o, "  prometheus_listen: {}", yaml_str(&a.to_string()));
            }
            None => {
                let _ = writeln!(o, "  prometheus_listen: off");
            }
        }
        match self.fleet.distribution_rate {
            Some(r) => {
                let _ = writeln!(o, "  distributions: true");
                let _ = writeln!(o, "  distribution_sample_rate: {r}");
            }
            None => {
                let _ = writeln!(o, "  distributions: false");
            }
        }
        let b: Vec<String> = self.fleet.buckets.iter().map(|b| b.to_string()).collect();
        let _ = writeln!(o, "  histogram_buckets: [{}]", b.join(", "));
        let _ = writeln!(o, "  max_series: {}", self.fleet.max_series);
        match &self.fleet.otlp_endpoint {
            Some(e) => {
                let _ = writeln!(o, "  otlp_endpoint: {}", yaml_str(e));
            }
            None => {
                let _ = writeln!(o, "  otlp_endpoint: off");
            }
        }
        let _ = writeln!(o, "instances:");
        for i in &self.instances {
            let _ = writeln!(o, "  - interface: {}", yaml_str(&i.interface));
            if let Source::File(p) = &i.source {
                let _ = writeln!(o, "    pcap: {}", yaml_str(&p.display().to_string()));
            }
            let list = |v: Vec<String>| {
                if v.is_empty() {
                    "[]".to_string()
                } else {
                    format!("[{}]", v.join(", "))
                }
            };
            let _ = writeln!(
                o,
                "    tags: {}",
                list(i.tags.iter().map(|t| yaml_str(t)).collect())
            );
            let _ = writeln!(
                o,
                "    ips: {}",
                list(i.ips.iter().map(|c| yaml_str(&c.to_string())).collect())
            );
            let _ = writeln!(
                o,
                "    hosts: {}",
                list(i.hosts.iter().map(|h| yaml_str(h)).collect())
            );
            match i.sample {
                Some(d) => {
                    let _ = writeln!(o, "    sample: true");
                    let _ = writeln!(o, "    sample_duration: {}", secs(d.duration));
                    let _ = writeln!(o, "    sample_interval: {}", secs(d.interval));
                }
                None => {
                    let _ = writeln!(o, "    sample: false");
                }
            }
            let _ = writeln!(o, "    max_flows: {}", i.max_flows);
            let _ = writeln!(o, "    container_tags: {}", i.container_tags);
            let _ = writeln!(o, "    kube_labels: {}", i.kube_labels);
            let _ = writeln!(o, "    group_by: {}", i.group_by.name());
            if let GroupBy::Subnet { v4, v6 } = i.group_by {
                let _ = writeln!(o, "    subnet_v4_prefix: {v4}");
                let _ = writeln!(o, "    subnet_v6_prefix: {v6}");
            }
            let _ = writeln!(o, "    trust_ip_id: {}", i.trust_ip_id);
            let _ = writeln!(o, "    capture: {}", i.capture.name());
            let _ = writeln!(o, "    protocols: [{}]", i.protocols.names().join(", "));
            let _ = writeln!(o, "    threads: {}", i.threads);
        }
        o
    }
}
