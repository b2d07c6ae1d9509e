//! Token seeds at rest: AES-256-GCM under a key file that otpgate creates on first start with
//! mode 0600. Each seed is sealed with a fresh 96-bit nonce and the token serial as associated
//! data, so a sealed seed copied onto another serial does not open.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("seed key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error(
        "the sealed seed of token `{0}` does not open with this key file (wrong key or corrupt)"
    )]
    Open(String),
    #[error("sealing the seed of token `{0}` failed")]
    Seal(String),
}

/// Seals and opens token seeds.
pub struct SeedCipher {
    cipher: Aes256Gcm,
}

impl SeedCipher {
    /// Reads the key file, or creates it (mode 0600, 32 random bytes) when it does not exist.
    /// A key file that others can read is refused, as ssh refuses a readable private key.
    pub fn load_or_create(path: &Path) -> Result<SeedCipher, SealError> {
        let fail = |reason: String| SealError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        if !path.exists() {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
            }
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            rand::rngs::OsRng.fill_bytes(key.as_mut());
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| fail(format!("cannot create: {e}")))?;
            file.write_all(key.as_ref())
                .and_then(|_| file.sync_all())
                .map_err(|e| fail(format!("cannot write: {e}")))?;
            tracing::info!(path = %path.display(), "created a new seed key file");
        }
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "is accessible by group or others (mode {mode:o}); run `chmod 600 {}`",
                path.display()
            )));
        }
        let key = Zeroizing::new(std::fs::read(path).map_err(|e| fail(e.to_string()))?);
        if key.len() != KEY_LEN {
            return Err(fail(format!(
                "must hold exactly {KEY_LEN} bytes, found {}",
                key.len()
            )));
        }
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|e| fail(e.to_string()))?;
        Ok(SeedCipher { cipher })
    }

    /// Seals `seed` for token `serial`: nonce || ciphertext+tag.
    pub fn seal(&self, serial: &str, seed: &[u8]) -> Result<Vec<u8>, SealError> {
        // A random 96-bit nonce per seal from the thread's CSPRNG (ChaCha, seeded and
        // periodically reseeded from the OS): unique with overwhelming probability, and cheap
        // enough for importing a million seeds.
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: seed,
                    aad: serial.as_bytes(),
                },
            )
            .map_err(|_| SealError::Seal(serial.to_string()))?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Opens a sealed seed of token `serial`.
    pub fn open(&self, serial: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() <= NONCE_LEN {
            return Err(SealError::Open(serial.to_string()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: serial.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open(serial.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding_to_serial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed.key");
        let cipher = SeedCipher::load_or_create(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = cipher.seal("T1", b"12345678901234567890").expect("seal");
        assert!(!sealed.windows(20).any(|w| w == b"12345678901234567890"));
        let again = SeedCipher::load_or_create(&path).expect("reload");
        assert_eq!(
            again.open("T1", &sealed).expect("open").as_slice(),
            b"12345678901234567890"
        );
        assert!(again.open("T2", &sealed).is_err(), "bound to the serial");
        assert!(again.open("T1", &sealed[..5]).is_err());
    }

    #[test]
    fn readable_key_file_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed.key");
        SeedCipher::load_or_create(&path).expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = SeedCipher::load_or_create(&path).err().expect("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn wrong_key_length_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed.key");
        std::fs::write(&path, b"short").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(SeedCipher::load_or_create(&path).is_err());
    }
}
