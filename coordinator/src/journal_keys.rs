//! What the coordinator's journals (plans, configuration versions, rollouts) share: keys that
//! sort by number, and JSON records read back with the key named when one is damaged.

/// `prefix` then `n` in 20 digits, so keys sort by number.
pub fn numbered_key(prefix: &[u8], n: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{n:020}").as_bytes());
    k
}

/// A record that does not read back: its key and why.
#[derive(Debug)]
pub struct Damaged {
    pub key: String,
    pub detail: String,
}

/// A JSON record of `key`.
pub fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, Damaged> {
    serde_json::from_slice(value).map_err(|e| Damaged { key: String::from_utf8_lossy(key).into_owned(), detail: e.to_string() })
}
