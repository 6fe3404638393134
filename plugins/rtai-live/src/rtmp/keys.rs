//! Stream keys: the `stream-keys` property (`name=key,...`), the key file (`name key`
//! per line, `sha256:<hex>` allowed, re-read when it changes) and the split of a
//! publish name into stream and `?key=`.
//!
//! Keys are kept only as SHA-256 digests and compared in constant time
//! (digest against digest, so neither content nor length leaks through timing).
//! Nothing here formats a key: `Debug` shows names and a count only.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub type KeyDigest = [u8; 32];

pub fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// `sha256:<64 hex>` as a digest, anything else as a plain key (hashed here).
pub fn parse_key(spec: &str) -> Result<KeyDigest, String> {
    match spec.strip_prefix("sha256:") {
        Some(hex) => {
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("sha256: needs 64 hex digits".into());
            }
            let mut out = [0u8; 32];
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .map_err(|_| "sha256: needs 64 hex digits".to_string())?;
            }
            Ok(out)
        }
        None if spec.is_empty() => Err("empty key".into()),
        None => Ok(digest(spec)),
    }
}

/// Stream name → key digests (a name may have several keys).
#[derive(Clone, Default)]
pub struct KeySet {
    entries: Vec<(String, KeyDigest)>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "KeySet {{ streams: {names:?}, keys: <redacted> }}")
    }
}

impl KeySet {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn extend(&mut self, other: &KeySet) {
        self.entries.extend(other.entries.iter().cloned());
    }

    /// `name=key,name=key` (the `stream-keys` property). Errors name the item's
    /// position only, never its content.
    pub fn parse_pairs(list: &str) -> Result<KeySet, String> {
        let mut entries = Vec::new();
        for (i, item) in list.split(',').enumerate() {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let Some((name, key)) = item.split_once('=') else {
                return Err(format!("stream-keys item {} has no '='", i + 1));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("stream-keys item {} has no stream name", i + 1));
            }
            let key =
                parse_key(key.trim()).map_err(|e| format!("stream-keys item {}: {e}", i + 1))?;
            entries.push((name.to_string(), key));
        }
        Ok(KeySet { entries })
    }

    /// The key file: `name key` per line, `#` comments and blank lines ignored.
    pub fn parse_file(text: &str) -> Result<KeySet, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(name), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected `name key`", i + 1));
            };
            let key = parse_key(key).map_err(|e| format!("line {}: {e}", i + 1))?;
            entries.push((name.to_string(), key));
        }
        Ok(KeySet { entries })
    }

    /// Whether `key` is a key of stream `name`. Every entry is compared.
    pub fn verify(&self, name: &str, key: &str) -> bool {
        let presented = digest(key);
        let mut ok = subtle::Choice::from(0);
        for (n, d) in &self.entries {
            let m = d.ct_eq(&presented) & subtle::Choice::from((n == name) as u8);
            ok |= m;
        }
        ok.into()
    }

    /// The stream names whose key is `key` (a publish that sends only its key).
    /// Every entry is compared.
    pub fn streams_for_key(&self, key: &str) -> Vec<String> {
        let presented = digest(key);
        let mut out = Vec::new();
        for (n, d) in &self.entries {
            if bool::from(d.ct_eq(&presented)) {
                out.push(n.clone());
            }
        }
        out
    }

    pub fn has_stream(&self, name: &str) -> bool {
        self.entries.iter().any(|(n, _)| n == name)
    }
}

/// The key file and its last state, re-read when its modification time or size changes.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    keys: KeySet,
}

impl KeyFile {
    pub fn new(path: PathBuf) -> KeyFile {
        KeyFile {
            path,
            stamp: None,
            keys: KeySet::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current keys, re-reading the file if it changed. A file that cannot be
    /// read or parsed yields no keys (every publish it would cover is refused) and
    /// an error describing why (without file content).
    pub fn keys(&mut self) -> (&KeySet, Option<String>) {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => {
                self.stamp = None;
                self.keys = KeySet::default();
                return (&self.keys, Some(format!("cannot read the key file: {e}")));
            }
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        let mut error = None;
        if self.stamp != Some(stamp) {
            self.stamp = Some(stamp);
            self.keys = match std::fs::read_to_string(&self.path)
                .map_err(|e| format!("cannot read the key file: {e}"))
                .and_then(|t| KeySet::parse_file(&t).map_err(|e| format!("key file {e}")))
            {
                Ok(k) => k,
                Err(e) => {
                    error = Some(e);
                    KeySet::default()
                }
            };
        }
        (&self.keys, error)
    }
}

/// A publish name split into stream name and the `key` query parameter:
/// `cam1?key=abc` → (`cam1`, Some(`abc`)); `abc` → (`abc`, None).
pub fn split_publish_name(publish: &str) -> (String, Option<String>) {
    match publish.split_once('?') {
        Some((name, query)) => {
            let key = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "key")
                .map(|(_, v)| v.into_owned());
            (name.to_string(), key)
        }
        None => (publish.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pairs_and_hashes() {
        let hex: String = digest("s3").iter().map(|b| format!("{b:02x}")).collect();
        let set = KeySet::parse_pairs(&format!("cam1=s1, cam2 = s2,cam3=sha256:{hex}")).unwrap();
        assert!(set.verify("cam1", "s1"));
        assert!(set.verify("cam2", "s2"));
        assert!(set.verify("cam3", "s3"));
        assert!(!set.verify("cam1", "s2"));
        assert!(!set.verify("cam3", &format!("sha256:{hex}")));
        assert_eq!(set.streams_for_key("s2"), vec!["cam2".to_string()]);
        assert!(!format!("{set:?}").contains("s1"));
        assert!(KeySet::parse_pairs("cam1").is_err());
        assert!(KeySet::parse_pairs("=k").is_err());
        assert!(KeySet::parse_pairs("a=sha256:zz").is_err());
    }

    #[test]
    fn key_file_lines() {
        let set = KeySet::parse_file("# comment\n\ncam1 k1\n  cam2\tk2  \n").unwrap();
        assert!(set.verify("cam1", "k1") && set.verify("cam2", "k2"));
        let err = KeySet::parse_file("cam1 k1\ncam2 secret-extra more\n").unwrap_err();
        assert_eq!(err, "line 2: expected `name key`");
        assert!(KeySet::parse_file("lonely\n").is_err());
    }

    #[test]
    fn split() {
        assert_eq!(
            split_publish_name("cam1?key=a%20b&x=1"),
            ("cam1".into(), Some("a b".into()))
        );
        assert_eq!(split_publish_name("abc"), ("abc".into(), None));
        assert_eq!(split_publish_name("cam?x=1"), ("cam".into(), None));
    }

    proptest! {
        #[test]
        fn key_file_round_trips(entries in proptest::collection::vec(("[a-z0-9_-]{1,12}", "[!-~]{1,40}"), 0..20)) {
            let text: String = entries.iter().map(|(n, k)| format!("{n} {k}\n")).collect();
            let set = KeySet::parse_file(&text);
            // A key that happens to start with "sha256:" must be valid hex; other keys always parse.
            prop_assume!(entries.iter().all(|(_, k)| !k.starts_with("sha256:")));
            let set = set.unwrap();
            prop_assert_eq!(set.len(), entries.len());
            for (n, k) in &entries {
                prop_assert!(set.verify(n, k));
            }
        }

        #[test]
        fn parsers_never_panic(text in "\\PC{0,200}") {
            let _ = KeySet::parse_file(&text);
            let _ = KeySet::parse_pairs(&text);
            let _ = split_publish_name(&text);
        }

        #[test]
        fn errors_never_contain_the_key(key in "[a-zA-Z0-9]{8,20}") {
            let bad = format!("cam1 {key} extra");
            let e = KeySet::parse_file(&bad).unwrap_err();
            prop_assert!(!e.contains(&key));
            let e = KeySet::parse_pairs(&key).unwrap_err();
            prop_assert!(!e.contains(&key));
        }

        #[test]
        fn split_recovers_name_and_key(name in "[a-zA-Z0-9_]{1,16}", key in "\\PC{1,30}") {
            let encoded: String = form_urlencoded::Serializer::new(String::new()).append_pair("key", &key).finish();
            let (n, k) = split_publish_name(&format!("{name}?{encoded}"));
            prop_assert_eq!(n, name);
            prop_assert_eq!(k, Some(key));
        }
    }
}
