//! Configuration errors: [`ConfigError`] (file, line and column, key path, message, the
//! picture of the offending lines) and the translation of serde-saphyr's errors into it.
//!
//! The translation reads the library's structured error (its variant, its budget breach),
//! never its wording: a value of the wrong type gets "expected ..." from the Rust type of
//! the key at that position ([`raw::expected_at`]), a breached budget names metro's own
//! limit, and anything else (syntax) keeps the library's message. The same words label
//! the snippet, through a serde-saphyr `MessageFormatter`.

use std::borrow::Cow;
use std::fmt;

use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{DefaultMessageFormatter, Error, Location, MessageFormatter};

use super::raw;
use super::yaml::{self, pos};

/// A configuration error: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<string>`).
    pub origin: String,
    /// 1-based line and column, when known.
    pub position: Option<(u64, u64)>,
    /// The key path (`instances[0].ips[2]`), when known.
    pub key: Option<String>,
    pub message: String,
    /// A rendering of the offending lines, when the YAML parser provides one.
    pub snippet: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some((l, c)) = self.position {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": ")?;
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(s) = &self.snippet {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about the whole file (cannot read it, empty, ...).
    pub fn file(origin: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: origin.to_string(),
            position: None,
            key: None,
            message: message.into(),
            snippet: None,
        }
    }

    /// An error about one key, at `loc` when known.
    pub fn key(
        origin: &str,
        key: impl Into<String>,
        loc: Option<Location>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            position: loc.and_then(pos),
            key: Some(key.into()),
            ..ConfigError::file(origin, message)
        }
    }
}

/// ` (line L, column C)` for a warning, or nothing when the position is unknown.
pub fn at(loc: Location) -> String {
    match pos(loc) {
        Some((l, c)) => format!(" (line {l}, column {c})"),
        None => String::new(),
    }
}

/// metro's words for serde-saphyr's errors.
struct Wording {
    /// What the value at the error's position must look like, when that is a known key.
    expected: Option<String>,
    /// The node budget the read ran with.
    max_nodes: usize,
}

impl MessageFormatter for Wording {
    fn format_message<'a>(&self, err: &'a Error) -> Cow<'a, str> {
        match (err, &self.expected) {
            (Error::Budget { breach, .. }, _) => Cow::Owned(too_large(breach, self.max_nodes)),
            // A value of the wrong type or shape for its key.
            (
                Error::InvalidScalar { .. }
                | Error::Unexpected { .. }
                | Error::SerdeInvalidType { .. }
                | Error::SerdeInvalidValue { .. }
                | Error::InvalidBooleanStrict { .. }
                | Error::NullIntoString { .. },
                Some(what),
            ) => Cow::Owned(format!("expected {what}")),
            _ => DefaultMessageFormatter.format_message(err),
        }
    }
}

fn too_large(breach: &BudgetBreach, max_nodes: usize) -> String {
    let what = match breach {
        BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => {
            format!("metro reads at most {max_nodes} YAML nodes (list entries, keys and values)")
        }
        BudgetBreach::ScalarBytes { total_scalar_bytes } => format!(
            "its values add up to more than {} MiB ({total_scalar_bytes} bytes)",
            super::limits::MAX_CONFIG_BYTES >> 20
        ),
        BudgetBreach::Depth { depth } => {
            format!("lists and maps nest {depth} deep")
        }
        // Anchors, aliases, merge keys: limits a configuration never comes near.
        other => format!("a YAML limit is breached ({other:?})"),
    };
    format!("the configuration is too large: {what}")
}

/// The error itself, out of the wrappers that add a snippet or an alias's location.
fn innermost(e: &Error) -> &Error {
    match e.without_snippet() {
        Error::AliasError { error, .. } => innermost(error),
        inner => inner,
    }
}

/// A serde-saphyr error as a [`ConfigError`]: position, key path, metro's message and the
/// picture of the lines. `max_nodes` is the budget the read ran with.
pub fn from_yaml(e: &Error, origin: &str, text: &str, max_nodes: usize) -> ConfigError {
    let position = e.location().and_then(pos);
    let key = position.and_then(|(l, c)| yaml::path_at(text, l, c));
    let wording = Wording {
        expected: key.as_deref().and_then(raw::expected_at),
        max_nodes,
    };
    // The message without the library's own "at line L column C": the position is already
    // in front of it. Control characters (from the document's text) are escaped, as the
    // library's renderer does.
    let mut message = String::new();
    for c in wording.format_message(innermost(e)).chars() {
        if c.is_control() {
            message.extend(c.escape_debug());
        } else {
            message.push(c);
        }
    }
    let full = e.render_with_options(serde_saphyr::render_options! {
        formatter: &wording,
        source_name: Some(origin),
    });
    // Keep only the picture of the offending lines; the first line repeats the message.
    let snippet = full
        .split_once('\n')
        .map(|(_, rest)| rest.to_string())
        .filter(|s| !s.trim().is_empty());
    ConfigError {
        origin: origin.to_string(),
        position,
        key: key.filter(|k| !k.is_empty()),
        message,
        snippet,
    }
}
