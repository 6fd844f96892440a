//! Reading the daemons' TOML configuration files. Every error names the file; parse errors also
//! give the line, the column, the offending line's text and serde's message (which names the key).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: {reason}")]
    Invalid { path: PathBuf, key: &'static str, reason: String },
}

/// Reads a file's text.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })
}

/// Parses TOML text into `T`; `path` is only used in errors.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: toml_message(text, &e) })
}

/// An invalid-value error for `key`.
pub fn invalid<T>(path: &Path, key: &'static str, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid { path: path.into(), key, reason: reason.into() })
}

/// Resolves a relative path against the folder of the config file it came from.
pub fn resolve(config: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = config.parent().unwrap_or(Path::new(".")).join(&*p);
    }
}

/// A TOML error as `line L, column C: message` (the message names the key).
pub fn toml_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}, column {column} (`{source_line}`): {}", e.message().trim_end())
        }
        None => e.message().trim_end().to_string(),
    }
}
