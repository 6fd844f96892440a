//! What the optimiser's tests share: where the public instances are.

use std::path::PathBuf;

/// `$PRESAGE_SHARED_DATA/<set>` (default `../shared/data/<set>` beside the repository); panics
/// naming where it looked when `marker` is not there.
pub fn shared_set(set: &str, marker: &str) -> PathBuf {
    let root = std::env::var_os("PRESAGE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let dir = root.join(set);
    assert!(dir.join(marker).exists(), "the {set} instances are not at {} (set PRESAGE_SHARED_DATA)", dir.display());
    dir
}
