//! `otpgate-bench fixture`: N users, each with one TOTP token, written for both servers of the
//! comparison so that otpgate and FreeRADIUS do the same work for the same logins.
//!
//! Files written into `--out` (created if missing):
//!
//! | file             | for                         | content                                                      |
//! |------------------|-----------------------------|--------------------------------------------------------------|
//! | `users.csv`      | `otpgate user import`       | `username,password_hash,email,first,last`                    |
//! | `tokens.csv`     | `otpgate token import`      | `serial,secret,kind,digits,step,owner`, TOTP SHA-1 6/30 s    |
//! | `authorize`      | FreeRADIUS `files` module   | `SSHA2-256-Password` (hex), `TOTP-Secret` (control list)     |
//! | `load-users.csv` | `otpgate-bench load`        | `username,password,seed_base32`                              |
//!
//! User `i` (0-based, row `i` of every file) is `u{i:07}` with password `pw-{i:07}-x` and token
//! `T{i:07}`. Its 20-byte seed and 8-byte salt are derived from `i` with SHA-256 under fixed
//! labels, so a fixture is reproducible and the load generator, otpgate and FreeRADIUS all agree
//! on it without sharing any state but these files.
//!
//! With `--hash ssha256` (the default) both servers verify the same salted SHA-256
//! (`{SSHA256}` base64 of digest‖salt for otpgate, FreeRADIUS's `SSHA2-256-Password` with the
//! same bytes), which makes the comparison like for like. The FreeRADIUS value is written as an
//! `0x..` hex literal (the attribute is of type octets, so rlm_pap gets the raw 40 bytes): a
//! quoted base64 body that happens to start with `0x` would be misread as hex by the users-file
//! parser and fail the whole file. With `--hash argon2id` `users.csv`
//! holds argon2id PHC strings with otpgate's default cost (random salts, computed on every core;
//! slow for many users): FreeRADIUS 3.2 cannot verify argon2, so `authorize` keeps the salted
//! SHA-256 of the same passwords and that figure is reported for otpgate alone.
//!
//! Every file is streamed through a `BufWriter`; memory stays small for a million users.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use data_encoding::{BASE32_NOPAD, HEXLOWER};
use otpgate::auth::password::{Argon2Params, PasswordHash};
use sha2::{Digest, Sha256};

/// Seed length in bytes (SHA-1 block output, RFC 4226's recommended 160 bits).
const SEED_LEN: usize = 20;
/// Salt length in bytes for `{SSHA256}` / `SSHA2-256-Password`.
const SALT_LEN: usize = 8;
/// SHA-256 digest (32) ‖ salt (8).
const SSHA_LEN: usize = 32 + SALT_LEN;
/// Base64 of digest ‖ salt: 40 bytes → 56 characters.
const SSHA_B64_LEN: usize = SSHA_LEN.div_ceil(3) * 4;
/// Base32 of a 20-byte seed, no padding: 32 characters.
const SEED_B32_LEN: usize = SEED_LEN * 8 / 5;
/// Users hashed per batch (argon2id batches are spread over every core).
const BATCH: usize = 4096;
/// Output buffer per file.
const BUF: usize = 1 << 20;

/// Which password hash goes into `users.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Ssha256,
    Argon2id,
}

impl Scheme {
    fn parse(name: &str) -> anyhow::Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "ssha256" => Ok(Scheme::Ssha256),
            "argon2id" => Ok(Scheme::Argon2id),
            other => bail!("--hash {other:?}: expected `ssha256` or `argon2id`"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scheme::Ssha256 => "ssha256",
            Scheme::Argon2id => "argon2id",
        }
    }
}

/// `u{index:07}`.
pub fn username(index: usize) -> String {
    format!("u{index:07}")
}

/// The deterministic password of user `index` (12+ characters, never ending in a digit).
pub fn password(index: usize) -> String {
    format!("pw-{index:07}-x")
}

/// 32 bytes of SHA-256(label ‖ index as u64 little-endian).
fn derive(label: &[u8], index: usize) -> [u8; 32] {
    Sha256::new()
        .chain_update(label)
        .chain_update((index as u64).to_le_bytes())
        .finalize()
        .into()
}

/// The 20-byte TOTP seed of user `index`.
pub fn seed(index: usize) -> [u8; SEED_LEN] {
    let mut out = [0; SEED_LEN];
    out.copy_from_slice(&derive(b"otpgate-bench fixture seed v1", index)[..SEED_LEN]);
    out
}

/// The 8-byte password salt of user `index`.
fn salt(index: usize) -> [u8; SALT_LEN] {
    let mut out = [0; SALT_LEN];
    out.copy_from_slice(&derive(b"otpgate-bench fixture salt v1", index)[..SALT_LEN]);
    out
}

/// SHA-256(password ‖ salt) ‖ salt: the bytes of `{SSHA256}` and of FreeRADIUS's
/// `SSHA2-256-Password`.
fn ssha256(password: &[u8], salt: &[u8]) -> [u8; SSHA_LEN] {
    let mut raw = [0u8; SSHA_LEN];
    raw[..32].copy_from_slice(
        &Sha256::new()
            .chain_update(password)
            .chain_update(salt)
            .finalize(),
    );
    raw[32..].copy_from_slice(salt);
    raw
}

/// Base64 of `raw`, written into `buf`.
fn b64<'a>(raw: &[u8; SSHA_LEN], buf: &'a mut [u8; SSHA_B64_LEN]) -> &'a str {
    let n = B64
        .encode_slice(raw, buf)
        .expect("buffer sized for 40 bytes of base64");
    std::str::from_utf8(&buf[..n]).expect("base64 is ASCII")
}

/// Lower-case hex of `raw`, written into `buf`.
fn hex<'a>(raw: &[u8; SSHA_LEN], buf: &'a mut [u8; 2 * SSHA_LEN]) -> &'a str {
    HEXLOWER.encode_mut(raw, buf);
    std::str::from_utf8(buf).expect("hex is ASCII")
}

/// Base32 (RFC 4648, upper case, no padding) of `seed`, written into `buf`.
fn base32<'a>(seed: &[u8; SEED_LEN], buf: &'a mut [u8; SEED_B32_LEN]) -> &'a str {
    BASE32_NOPAD.encode_mut(seed, buf);
    std::str::from_utf8(buf).expect("base32 is ASCII")
}

/// One output file: its path (for error messages) and a large buffered writer.
struct Out {
    path: PathBuf,
    w: BufWriter<File>,
}

impl Out {
    fn create(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let path = dir.join(name);
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Out {
            path,
            w: BufWriter::with_capacity(BUF, file),
        })
    }

    fn line(&mut self, args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
        self.w
            .write_fmt(args)
            .and_then(|()| self.w.write_all(b"\n"))
            .with_context(|| format!("writing {}", self.path.display()))
    }

    fn finish(self) -> anyhow::Result<()> {
        let path = self.path;
        let file = self
            .w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", path.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", path.display()))
    }
}

/// argon2id PHC strings for users `range`, computed on every core.
fn argon2id_batch(range: std::ops::Range<usize>) -> anyhow::Result<Vec<String>> {
    let params = Argon2Params::default();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let indices: Vec<usize> = range.collect();
    let per = indices.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = indices
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|&i| {
                            PasswordHash::new_argon2id(password(i).as_bytes(), &params)
                                .map(|h| h.as_stored().to_owned())
                                .with_context(|| format!("argon2id hash of {}", username(i)))
                        })
                        .collect::<anyhow::Result<Vec<String>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(indices.len());
        for handle in handles {
            all.extend(handle.join().expect("argon2id worker panicked")?);
        }
        Ok(all)
    })
}

pub fn run(args: &super::FixtureArgs) -> anyhow::Result<()> {
    let scheme = Scheme::parse(&args.hash)?;
    if args.users == 0 {
        bail!("--users must be at least 1");
    }
    if args.users > 10_000_000 {
        bail!(
            "--users {} is more than 10,000,000 (user names have 7 digits)",
            args.users
        );
    }
    let started = Instant::now();
    let dir = &args.out;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut users = Out::create(dir, "users.csv")?;
    let mut tokens = Out::create(dir, "tokens.csv")?;
    let mut authorize = Out::create(dir, "authorize")?;
    let mut load = Out::create(dir, "load-users.csv")?;

    users.line(format_args!("username,password_hash,email,first,last"))?;
    tokens.line(format_args!("serial,secret,kind,digits,step,owner"))?;
    authorize.line(format_args!(
        "# otpgate-bench fixture: {} users, FreeRADIUS users-file format (rlm_files).\n\
         # Check items with := go to the control list: SSHA2-256-Password (digest||salt as\n\
         # raw octets) for rlm_pap, TOTP-Secret (base32) for rlm_totp.",
        args.users
    ))?;
    load.line(format_args!("username,password,seed_base32"))?;

    let mut b64_buf = [0u8; SSHA_B64_LEN];
    let mut hex_buf = [0u8; 2 * SSHA_LEN];
    let mut b32_buf = [0u8; SEED_B32_LEN];
    let mut start = 0;
    while start < args.users {
        let end = (start + BATCH).min(args.users);
        let argon = match scheme {
            Scheme::Argon2id => Some(argon2id_batch(start..end)?),
            Scheme::Ssha256 => None,
        };
        for i in start..end {
            let (name, pw) = (username(i), password(i));
            let ssha = ssha256(pw.as_bytes(), &salt(i));
            match &argon {
                // PHC strings hold commas (`m=..,t=..,p=..`): quoted as CSV.
                Some(hashes) => users.line(format_args!("{name},\"{}\",,,", hashes[i - start]))?,
                None => users.line(format_args!(
                    "{name},{{SSHA256}}{},,,",
                    b64(&ssha, &mut b64_buf)
                ))?,
            }
            let secret = base32(&seed(i), &mut b32_buf);
            tokens.line(format_args!("T{i:07},{secret},totp,6,30,{name}"))?;
            authorize.line(format_args!(
                "{name} SSHA2-256-Password := 0x{}, TOTP-Secret := \"{secret}\"",
                hex(&ssha, &mut hex_buf)
            ))?;
            load.line(format_args!("{name},{pw},{secret}"))?;
        }
        start = end;
    }
    for out in [users, tokens, authorize, load] {
        out.finish()?;
    }
    println!(
        "fixture: {} users and TOTP tokens ({}) in {}: users.csv tokens.csv authorize \
         load-users.csv, {:.1} s",
        args.users,
        scheme.name(),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FixtureArgs;

    fn generate(users: usize, hash: &str) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("fx");
        run(&FixtureArgs {
            users,
            out: out.clone(),
            hash: hash.into(),
        })
        .unwrap();
        (tmp, out)
    }

    fn lines(dir: &Path, name: &str) -> Vec<String> {
        std::fs::read_to_string(dir.join(name))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn ssha256_hashes_verify_with_otpgate() {
        let (_tmp, dir) = generate(5, "ssha256");
        let users = lines(&dir, "users.csv");
        assert_eq!(users[0], "username,password_hash,email,first,last");
        assert_eq!(users.len(), 6);
        for (i, line) in users[1..].iter().enumerate() {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 5, "{line}");
            assert_eq!(fields[0], format!("u{i:07}"));
            let hash = PasswordHash::parse(fields[1]).unwrap();
            assert_eq!(hash.scheme(), "ssha256");
            assert!(hash.verify(password(i).as_bytes()));
            assert!(!hash.verify(password(i + 1).as_bytes()));
        }
        // Distinct salts: the same password would still hash differently.
        assert_ne!(salt(0), salt(1));
    }

    #[test]
    fn seeds_agree_across_files_and_are_reproducible() {
        let (_tmp, dir) = generate(4, "ssha256");
        let (_tmp2, dir2) = generate(4, "ssha256");
        let tokens = lines(&dir, "tokens.csv");
        let load = lines(&dir, "load-users.csv");
        let authorize = lines(&dir, "authorize");
        let users = lines(&dir, "users.csv");
        assert_eq!(tokens[0], "serial,secret,kind,digits,step,owner");
        assert_eq!(load[0], "username,password,seed_base32");
        let entries: Vec<&String> = authorize.iter().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(entries.len(), 4);
        for i in 0..4 {
            let t: Vec<&str> = tokens[i + 1].split(',').collect();
            let l: Vec<&str> = load[i + 1].split(',').collect();
            assert_eq!(t[0], format!("T{i:07}"));
            assert_eq!(&t[2..], ["totp", "6", "30", &format!("u{i:07}")]);
            assert_eq!(l[0], t[5]);
            assert_eq!(t[1], l[2], "tokens.csv and load-users.csv seeds differ");
            assert_eq!(BASE32_NOPAD.decode(t[1].as_bytes()).unwrap(), seed(i));
            // The FreeRADIUS entry has the same seed and the same SSHA-256 body as users.csv.
            let ssha = users[i + 1].split(',').nth(1).unwrap();
            let body = B64.decode(ssha.strip_prefix("{SSHA256}").unwrap()).unwrap();
            assert_eq!(
                *entries[i],
                format!(
                    "{} SSHA2-256-Password := 0x{}, TOTP-Secret := \"{}\"",
                    l[0],
                    HEXLOWER.encode(&body),
                    t[1]
                )
            );
            assert!(PasswordHash::parse(ssha).unwrap().verify(l[1].as_bytes()));
        }
        for name in ["users.csv", "tokens.csv", "authorize", "load-users.csv"] {
            assert_eq!(
                lines(&dir, name),
                lines(&dir2, name),
                "{name} not reproducible"
            );
        }
    }

    #[test]
    fn argon2id_hashes_verify() {
        let (_tmp, dir) = generate(2, "argon2id");
        let mut users = csv::Reader::from_path(dir.join("users.csv")).unwrap();
        for (i, record) in users.records().enumerate() {
            let record = record.unwrap();
            assert_eq!(record.len(), 5);
            let hash = PasswordHash::parse(&record[1]).unwrap();
            assert_eq!(hash.scheme(), "argon2id");
            assert!(!hash.needs_rehash(&Argon2Params::default()));
            assert!(hash.verify(password(i).as_bytes()));
        }
        // FreeRADIUS cannot verify argon2: its file keeps salted SHA-256 of the same password.
        let authorize = lines(&dir, "authorize");
        let first = authorize.iter().find(|l| !l.starts_with('#')).unwrap();
        assert!(
            first.starts_with("u0000000 SSHA2-256-Password := 0x"),
            "{first}"
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let args = |users, hash: &str| FixtureArgs {
            users,
            out: tmp.path().join("x"),
            hash: hash.into(),
        };
        assert!(run(&args(1, "md5")).is_err());
        assert!(run(&args(0, "ssha256")).is_err());
        let err = run(&FixtureArgs {
            users: 1,
            out: PathBuf::from("/proc/no/such/dir"),
            hash: "ssha256".into(),
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("/proc/no/such/dir"), "{err:#}");
    }
}
