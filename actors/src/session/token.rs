//! The session token: 256 random bits as 64 lowercase hex characters, written `0600`
//! atomically, compared in constant time. Its `Debug` never shows the secret.

use std::fmt::{self, Write as _};
use std::io;
use std::path::Path;

use subtle::ConstantTimeEq;

use crate::files::write_private;

/// A client must present this token in its handshake.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// A fresh token from the operating system's random source.
    ///
    /// # Errors
    ///
    /// When the random source fails.
    pub fn generate() -> io::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(io::Error::other)?;
        let hex = bytes.iter().fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
        Ok(Self(hex))
    }

    /// Writes the token to `path` (mode `0600`, temp file then rename), without a newline.
    ///
    /// # Errors
    ///
    /// Any I/O error.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        write_private(path, self.0.as_bytes())
    }

    /// Whether `candidate` is this token, in time independent of where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn tokens_are_64_hex_chars_and_unique() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.0.len(), 64);
        assert!(
            a.0.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(!a.matches(&b.0));
        assert!(a.matches(&a.0.clone()));
        assert!(!a.matches(""));
        assert!(!a.matches(&a.0[..63]));
    }

    #[test]
    fn written_private_and_redacted_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.token");
        let t = Token::generate().unwrap();
        t.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), t.0);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!format!("{t:?}").contains(&t.0));
    }
}
