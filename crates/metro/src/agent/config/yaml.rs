//! The YAML document as a tree of positions and keys, read a second time beside the typed
//! parse for what serde's derive cannot say: the key path at a line and column (for
//! errors) and the keys metro does not know (warnings, not errors: go-metro ignored them
//! too). Also serde-saphyr's options, the same for every read.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::limits::{MAX_CONFIG_BYTES, MAX_YAML_NODES};
use super::raw::{RawFile, RawInit, RawInstance};

/// serde-saphyr's options: its defaults, with room for `max_nodes` YAML nodes (long watch
/// lists).
pub fn options(max_nodes: usize) -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: max_nodes,
            max_events: 2 * max_nodes,
            max_total_scalar_bytes: MAX_CONFIG_BYTES as usize,
        },
    }
}

/// The options of every configuration read.
pub fn default_options() -> serde_saphyr::Options {
    options(MAX_YAML_NODES)
}

/// 1-based line and column; `None` when the parser does not know.
pub fn pos(loc: Location) -> Option<(u64, u64)> {
    if loc.line() == 0 {
        None
    } else {
        Some((loc.line(), loc.column()))
    }
}

/// A YAML node's keys or entries; `N` is the node type of its children.
enum Shape<N> {
    Map(Vec<(Spanned<String>, N)>),
    Seq(Vec<N>),
    Scalar,
}

/// A node with its keys and entries only: all the unknown-key scan needs, read on every
/// load (a watch list of two million entries is two million of these).
struct Bare(Shape<Bare>);

/// A node and where it starts, for the key path at an error's position.
struct Placed {
    /// Line and column (0 when unknown); `u32`, as serde-saphyr counts them.
    line: u32,
    column: u32,
    kind: Shape<Placed>,
}

impl<'de> Deserialize<'de> for Bare {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Shape::deserialize(d).map(Bare)
    }
}

impl<'de> Deserialize<'de> for Placed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Shape<Placed>>::deserialize(d)?;
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Placed {
            line: narrow(s.referenced.line()),
            column: narrow(s.referenced.column()),
            kind: s.value,
        })
    }
}

/// Every scalar visit gives `Shape::Scalar`: the value itself does not matter here.
macro_rules! scalar_visits {
    ($($method:ident($($arg:ty)?)),* $(,)?) => {
        $(
            fn $method<E>(self $(, _: $arg)?) -> Result<Shape<N>, E> {
                Ok(Shape::Scalar)
            }
        )*
    };
}

impl<'de, N: Deserialize<'de>> Deserialize<'de> for Shape<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<N>(PhantomData<N>);
        impl<'de, N: Deserialize<'de>> serde::de::Visitor<'de> for V<N> {
            type Value = Shape<N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Shape<N>, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = m.next_key::<Spanned<String>>()? {
                    v.push((k, m.next_value::<N>()?));
                }
                Ok(Shape::Map(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Shape<N>, A::Error> {
                let mut v = Vec::new();
                while let Some(n) = s.next_element::<N>()? {
                    v.push(n);
                }
                Ok(Shape::Seq(v))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Shape<N>, D::Error> {
                Shape::deserialize(d)
            }
            scalar_visits!(
                visit_bool(bool),
                visit_i64(i64),
                visit_u64(u64),
                visit_i128(i128),
                visit_u128(u128),
                visit_f64(f64),
                visit_str(&str),
                visit_unit(),
                visit_none(),
            );
        }
        d.deserialize_any(V(PhantomData))
    }
}

fn tree<T: for<'de> Deserialize<'de>>(text: &str) -> Option<T> {
    serde_saphyr::from_str_with_options::<T>(text, default_options()).ok()
}

/// The key path (`instances[0].ips[2]`, `""` for the whole document) of the node at
/// `line:col`: the deepest node that starts there, else the last key that starts on that
/// line before the column. `None` when neither exists or the document does not parse as
/// plain YAML.
pub fn path_at(text: &str, line: u64, col: u64) -> Option<String> {
    struct Best {
        line: u64,
        col: u64,
        node: Option<String>,
        key: Option<String>,
    }
    fn walk(n: &Placed, path: &str, best: &mut Best) {
        if u64::from(n.line) == best.line && u64::from(n.column) == best.col {
            best.node = Some(path.to_string());
        }
        match &n.kind {
            Shape::Map(m) => {
                for (k, v) in m {
                    let p = if path.is_empty() {
                        k.value.clone()
                    } else {
                        format!("{path}.{}", k.value)
                    };
                    if k.referenced.line() == best.line && k.referenced.column() < best.col {
                        best.key = Some(p.clone());
                    }
                    walk(v, &p, best);
                }
            }
            Shape::Seq(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), best);
                }
            }
            Shape::Scalar => {}
        }
    }
    let mut best = Best {
        line,
        col,
        node: None,
        key: None,
    };
    walk(&tree::<Placed>(text)?, "", &mut best);
    best.node.or(best.key)
}

/// Warn about every key metro does not know, naming its path and position.
pub fn unknown_keys(text: &str, origin: &str, warnings: &mut Vec<String>) {
    // The typed parse already succeeded; a document this scan cannot walk (e.g. a key that
    // is not a string) only loses the warnings.
    let Some(Bare(Shape::Map(top))) = tree(text) else {
        return;
    };
    let mut check = |known: &[&str], path: String, key: &Spanned<String>| {
        if !known.contains(&key.value.as_str()) {
            warnings.push(format!(
                "{origin}{}: unknown key `{path}` (ignored)",
                pos(key.referenced)
                    .map(|(l, c)| format!(":{l}:{c}"))
                    .unwrap_or_default()
            ));
        }
    };
    fn keys(n: &Bare) -> impl Iterator<Item = &Spanned<String>> {
        let entries = match &n.0 {
            Shape::Map(m) => m.as_slice(),
            _ => &[],
        };
        entries.iter().map(|(k, _)| k)
    }
    for (k, v) in &top {
        let name = k.value.as_str();
        check(RawFile::KEYS, name.to_string(), k);
        match (name, &v.0) {
            ("init_config", _) => {
                for k2 in keys(v) {
                    check(RawInit::KEYS, format!("init_config.{}", k2.value), k2);
                }
            }
            ("instances" | "config", Shape::Seq(items)) => {
                for (i, item) in items.iter().enumerate() {
                    for k2 in keys(item) {
                        check(RawInstance::KEYS, format!("{name}[{i}].{}", k2.value), k2);
                    }
                }
            }
            _ => {}
        }
    }
}
