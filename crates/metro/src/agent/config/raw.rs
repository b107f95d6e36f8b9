//! The file's shape: serde types that mirror the YAML, every key optional, with locations
//! kept (`Spanned`) where a later check names a line. Each section is declared once, by
//! [`section!`], which derives from the same field list the serde struct, the keys the
//! section knows (for the unknown-key warnings) and what each key's value must look like
//! (for type errors). Adding a key is adding a field; nothing else repeats its name.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// What a value must look like, in plain words, derived from the Rust type that reads it:
/// the message of a type error is "expected " and this.
pub trait Expect {
    fn what() -> String;
    /// What each entry must look like, for a list.
    fn entry() -> Option<String> {
        None
    }
}

/// `Expect` for types read as one scalar.
macro_rules! scalar_expect {
    ($($($ty:ty)|+ => $what:literal,)*) => {
        $($(
            impl Expect for $ty {
                fn what() -> String {
                    $what.into()
                }
            }
        )+)*
    };
}

scalar_expect! {
    i64 | u64 => "a whole number",
    u16 => "a whole number from 0 to 65535",
    f64 => "a number",
    bool => "true or false",
    String => "a single value (not a list or `key: value` entries)",
}

/// `Expect` for wrappers that read their content as it is (`Option`: absent or null is
/// the default; `Spanned`: the same value with its position).
macro_rules! transparent_expect {
    ($($wrapper:ident),*) => {
        $(
            impl<T: Expect> Expect for $wrapper<T> {
                fn what() -> String {
                    T::what()
                }
                fn entry() -> Option<String> {
                    T::entry()
                }
            }
        )*
    };
}

transparent_expect!(Option, Spanned);

impl<T: Expect> Expect for Vec<T> {
    fn what() -> String {
        "a list (`- item` lines or `[a, b]`)".into()
    }
    fn entry() -> Option<String> {
        Some(T::what())
    }
}

/// Declares one section of the file: the serde struct (`Debug`, `Default`, `Deserialize`),
/// `KEYS` (every key it reads, as the YAML spells it) and `expected(key, entry)`. Fields
/// take doc comments only: a serde rename or alias would make `KEYS` differ from what
/// serde reads (the test `section_keys_are_the_keys_serde_reads` compares the two).
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[doc = $doc:literal])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl $name {
            /// Every key this section reads.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// What the value of `key` (or with `entry`, each entry of its list) must
            /// look like; `None` for a key the section lacks.
            pub fn expected(key: &str, entry: bool) -> Option<String> {
                match key {
                    $(
                        stringify!($field) if entry => <$ty as Expect>::entry(),
                        stringify!($field) => Some(<$ty as Expect>::what()),
                    )*
                    _ => None,
                }
            }
        }

        impl Expect for $name {
            fn what() -> String {
                "`key: value` entries".into()
            }
        }
    };
}

section! {
    /// The whole file.
    pub struct RawFile {
        pub init_config: Option<RawInit>,
        pub instances: Option<Vec<Spanned<RawInstance>>>,
        /// go-metro before v0.6 called the instance list `config`.
        pub config: Option<Vec<Spanned<RawInstance>>>,
    }
}

section! {
    /// `init_config`: the agent-wide keys.
    pub struct RawInit {
        pub snaplen: Option<Spanned<i64>>,
        pub idle_ttl: Option<Spanned<f64>>,
        /// go-metro's documentation says `exp_ttl`, its code read `expired_ttl`: both are
        /// read (a warning when they disagree).
        pub exp_ttl: Option<Spanned<f64>>,
        pub expired_ttl: Option<Spanned<f64>>,
        pub statsd_ip: Option<Spanned<String>>,
        pub statsd_port: Option<Spanned<u16>>,
        pub statsd_socket: Option<Spanned<String>>,
        pub log_to_file: Option<bool>,
        pub log_level: Option<Spanned<String>>,
        pub log_file: Option<String>,
        pub flush_interval: Option<Spanned<f64>>,
        pub dns_refresh: Option<Spanned<f64>>,
        pub baseline_window: Option<Spanned<f64>>,
        pub buffer_size: Option<Spanned<u64>>,
        pub max_flows: Option<Spanned<u64>>,
        pub prometheus_listen: Option<Spanned<String>>,
        pub distributions: Option<bool>,
        pub distribution_sample_rate: Option<Spanned<f64>>,
        pub histogram_buckets: Option<Spanned<Vec<f64>>>,
        pub max_series: Option<Spanned<u64>>,
        pub otlp_endpoint: Option<Spanned<String>>,
    }
}

section! {
    /// One entry of `instances` (or `config`): one sniffer.
    pub struct RawInstance {
        pub interface: Option<Spanned<String>>,
        pub tags: Option<Vec<String>>,
        pub ips: Option<Vec<Spanned<String>>>,
        pub hosts: Option<Vec<Spanned<String>>>,
        pub sample: Option<bool>,
        pub sample_duration: Option<Spanned<f64>>,
        pub sample_interval: Option<Spanned<f64>>,
        pub pcap: Option<Spanned<String>>,
        pub max_flows: Option<Spanned<u64>>,
        pub container_tags: Option<bool>,
        pub kube_labels: Option<bool>,
        pub group_by: Option<Spanned<String>>,
        pub subnet_v4_prefix: Option<Spanned<u64>>,
        pub subnet_v6_prefix: Option<Spanned<u64>>,
        pub trust_ip_id: Option<bool>,
        pub capture: Option<Spanned<String>>,
        pub protocols: Option<Vec<Spanned<String>>>,
        pub threads: Option<Spanned<u64>>,
    }
}

/// What the value at a key path (`init_config.snaplen`, `instances[2].ips[0]`, `""` for the
/// whole file) must look like, when the path names a known key or an entry of its list.
pub fn expected_at(path: &str) -> Option<String> {
    // `ips[0]` -> ("ips", true): the key, and whether the path names one of its entries.
    let split = |s: &str| match s.split_once('[') {
        Some((name, _)) => (name.to_string(), true),
        None => (s.to_string(), false),
    };
    let instance =
        |s: &str| matches!(split(s), (name, true) if name == "instances" || name == "config");
    match path.split('.').collect::<Vec<_>>().as_slice() {
        [""] => Some(format!(
            "{} (`init_config:` and `instances:`)",
            RawFile::what()
        )),
        [top] => {
            let (key, entry) = split(top);
            RawFile::expected(&key, entry)
        }
        ["init_config", key] => {
            let (key, entry) = split(key);
            RawInit::expected(&key, entry)
        }
        [top, key] if instance(top) => {
            let (key, entry) = split(key);
            RawInstance::expected(&key, entry)
        }
        _ => None,
    }
}
