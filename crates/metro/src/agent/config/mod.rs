//! The agent's configuration: a go-metro.yaml (every key go-metro read, with the defaults it
//! lacked) plus metro's own keys, read into the validated [`Config`] the agent runs on.
//!
//! One way through, one file a step, as in ripgrep's flags:
//! YAML text -> `raw` (serde types that mirror the file, every key optional, locations
//! kept; each section declared once, which also gives its key list) -> `validate`
//! (bounds from `limits`, defaults, warnings) -> `model` (what the agent runs).
//! Beside the typed parse, `yaml` walks the document for key paths and unknown keys, and
//! `error` turns serde-saphyr's structured errors into [`ConfigError`]s that name the
//! file, line and column and the key path. `render` writes a `Config` back as YAML
//! (`check-config`).

mod error;
mod limits;
mod model;
mod raw;
mod render;
mod validate;
mod yaml;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::ConfigError;
pub use limits::*;
pub use model::{
    CaptureMode, Cidr, Config, DutyCycle, FleetConfig, GroupBy, Instance, LogLevel, MAX_THREADS,
    Protocols, Source, StatsdTarget, mask,
};
pub use raw::{RawFile, RawInit, RawInstance};

/// A parsed configuration and the warnings found on the way.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Read and parse a configuration file. A missing or unreadable file, or one larger than
/// [`MAX_CONFIG_BYTES`], is an error.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    use std::io::Read;
    let origin = path.display().to_string();
    let fail = |message: String| ConfigError::file(&origin, message);
    let file = std::fs::File::open(path)
        .map_err(|e| fail(format!("cannot read the configuration file: {e}")))?;
    // Read one byte past the limit (a pipe or /dev/zero has no size to check first).
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read the configuration file: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(fail(format!(
            "the configuration file is larger than {} MiB",
            MAX_CONFIG_BYTES >> 20
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "cannot read the configuration file: not UTF-8 text (byte offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse(&text, &origin)
}

/// Parse configuration text; `origin` names it in errors and warnings.
pub fn parse(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    parse_within(text, origin, MAX_YAML_NODES)
}

/// [`parse`] with a node budget of `max_nodes` (tests try the budget with small ones).
fn parse_within(text: &str, origin: &str, max_nodes: usize) -> Result<Loaded, ConfigError> {
    let raw: Option<RawFile> = serde_saphyr::from_str_with_options(text, yaml::options(max_nodes))
        .map_err(|e| error::from_yaml(&e, origin, text, max_nodes))?;
    let Some(raw) = raw else {
        return Err(ConfigError::file(
            origin,
            "the configuration is empty: expected `init_config` and `instances`",
        ));
    };
    let mut warnings = Vec::new();
    yaml::unknown_keys(text, origin, &mut warnings);
    let config = Config::from_raw(raw, origin, &mut warnings)?;
    Ok(Loaded { config, warnings })
}
