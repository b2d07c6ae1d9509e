//! PSKC files (RFC 6030 section 6.1) whose every encrypted value and MAC was made by the
//! `openssl` command-line tool, not by otpgate's own crates: AES-128/192/256-CBC and 3DES-CBC,
//! each with HMAC-SHA1 and HMAC-SHA256 ValueMACs, imported by the real binary with
//! `--pskc-key-file`; the token is then registered with two consecutive HOTP codes of the
//! plaintext secret, which proves the secret came out right. A wrong key or a tampered MAC
//! imports nothing.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use base64::Engine;

use crate::harness::*;

/// Runs `openssl ARGS` with `input` on its standard input; its standard output.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `n` random octets from `openssl rand`.
fn random(n: usize) -> Vec<u8> {
    let out = openssl(&["rand", &n.to_string()], b"");
    assert_eq!(out.len(), n);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One XML Encryption cipher: its URI fragment, the `openssl enc` cipher, key and IV octets.
struct Cipher {
    xmlenc: &'static str,
    openssl: &'static str,
    key_len: usize,
    iv_len: usize,
}

const AES128: Cipher = Cipher {
    xmlenc: "aes128-cbc",
    openssl: "-aes-128-cbc",
    key_len: 16,
    iv_len: 16,
};
const AES192: Cipher = Cipher {
    xmlenc: "aes192-cbc",
    openssl: "-aes-192-cbc",
    key_len: 24,
    iv_len: 16,
};
const AES256: Cipher = Cipher {
    xmlenc: "aes256-cbc",
    openssl: "-aes-256-cbc",
    key_len: 32,
    iv_len: 16,
};
const TRIPLE_DES: Cipher = Cipher {
    xmlenc: "tripledes-cbc",
    openssl: "-des-ede3-cbc",
    key_len: 24,
    iv_len: 8,
};

/// The ValueMAC algorithms: MACMethod URI, `openssl dgst` digest, MAC key octets.
const HMAC_SHA1: (&str, &str, usize) = ("http://www.w3.org/2000/09/xmldsig#hmac-sha1", "-sha1", 20);
const HMAC_SHA256: (&str, &str, usize) = (
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256",
    "-sha256",
    32,
);

/// The CipherValue of `plain` under `key`: a fresh IV, then `openssl enc` (PKCS#7 padding).
fn encrypt(cipher: &Cipher, key: &[u8], plain: &[u8]) -> Vec<u8> {
    let iv = random(cipher.iv_len);
    let (key_hex, iv_hex) = (hex(key), hex(&iv));
    let args = ["enc", "-e", cipher.openssl, "-K", &key_hex, "-iv", &iv_hex];
    [iv, openssl(&args, plain)].concat()
}

/// A PSKC file, its key in hex, and the plaintext secret of its one HOTP key.
struct Case {
    document: String,
    key: Vec<u8>,
    secret: Vec<u8>,
    serial: String,
    /// The ValueMAC's base64, to tamper with.
    mac: String,
}

/// RFC 6030 Figure 6's shape: a pre-shared key named in EncryptionKey, the MAC key encrypted
/// under it, one HOTP KeyPackage whose Secret is an EncryptedValue with a ValueMAC over the
/// CipherValue octets (IV || ciphertext, section 6.1.1).
fn build(cipher: &Cipher, mac: (&str, &str, usize), serial: &str) -> Case {
    let (mac_uri, digest, mac_len) = mac;
    let key = random(cipher.key_len);
    let mac_key = random(mac_len);
    let secret = random(20);
    let encrypted_mac_key = encrypt(cipher, &key, &mac_key);
    let encrypted_secret = encrypt(cipher, &key, &secret);
    let macopt = format!("hexkey:{}", hex(&mac_key));
    let value_mac = openssl(
        &[
            "dgst", digest, "-mac", "HMAC", "-macopt", &macopt, "-binary",
        ],
        &encrypted_secret,
    );
    assert_eq!(value_mac.len(), if digest == "-sha1" { 20 } else { 32 });
    let method = format!(
        r#"<xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#{}"/>"#,
        cipher.xmlenc
    );
    let document = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<pskc:KeyContainer
  xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
  xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc"
  xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"
  Version="1.0">
    <pskc:EncryptionKey>
        <ds:KeyName>Pre-shared-key</ds:KeyName>
    </pskc:EncryptionKey>
    <pskc:MACMethod Algorithm="{mac_uri}">
        <pskc:MACKey>
            {method}
            <xenc:CipherData>
                <xenc:CipherValue>{mac_key}</xenc:CipherValue>
            </xenc:CipherData>
        </pskc:MACKey>
    </pskc:MACMethod>
    <pskc:KeyPackage>
        <pskc:DeviceInfo>
            <pskc:Manufacturer>Manufacturer</pskc:Manufacturer>
            <pskc:SerialNo>{serial}</pskc:SerialNo>
        </pskc:DeviceInfo>
        <pskc:CryptoModuleInfo>
            <pskc:Id>CM_ID_001</pskc:Id>
        </pskc:CryptoModuleInfo>
        <pskc:Key Id="{serial}" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
            <pskc:Issuer>Issuer</pskc:Issuer>
            <pskc:AlgorithmParameters>
                <pskc:ResponseFormat Length="6" Encoding="DECIMAL"/>
            </pskc:AlgorithmParameters>
            <pskc:Data>
                <pskc:Secret>
                    <pskc:EncryptedValue>
                        {method}
                        <xenc:CipherData>
                            <xenc:CipherValue>{secret}</xenc:CipherValue>
                        </xenc:CipherData>
                    </pskc:EncryptedValue>
                    <pskc:ValueMAC>{value_mac}</pskc:ValueMAC>
                </pskc:Secret>
                <pskc:Counter>
                    <pskc:PlainValue>0</pskc:PlainValue>
                </pskc:Counter>
            </pskc:Data>
        </pskc:Key>
    </pskc:KeyPackage>
</pskc:KeyContainer>
"#,
        mac_key = b64(&encrypted_mac_key),
        secret = b64(&encrypted_secret),
        value_mac = b64(&value_mac),
    );
    Case {
        document,
        key,
        secret,
        serial: serial.to_owned(),
        mac: b64(&value_mac),
    }
}

/// A file holding `text`, mode 0600, in the appliance's directory.
fn private_file(app: &Appliance, name: &str, text: &str) -> String {
    let path = app.dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.display().to_string()
}

fn code(secret: &[u8], counter: u64) -> String {
    otpgate::otp::hotp::code(secret, counter, 6, otpgate::otp::Algorithm::Sha1)
}

/// `token import FILE --pskc-key-file KEYFILE` fails, naming `expected`, and imports nothing.
fn refused(app: &Appliance, case: &Case, document: &str, key: &[u8], expected: &str) {
    let file = private_file(app, "refused.pskc", document);
    let key_file = private_file(app, "refused.hex", &hex(key));
    let out = app.cli(
        &["token", "import", &file, "--pskc-key-file", &key_file],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}: imported", case.serial);
    assert!(
        err.contains("nothing imported") && err.contains(expected),
        "{}: {err}",
        case.serial
    );
    assert!(
        !err.contains(&hex(key)) && !err.contains(&hex(&case.secret)),
        "secret leaked: {err}"
    );
    let show = app.cli(&["token", "show", &case.serial], None);
    assert!(!show.status.success(), "{}: the token exists", case.serial);
}

/// Both MACs with `cipher`: wrong key and tampered MAC refused, then the file imported by the
/// binary, the secret read back by the library identical to openssl's plaintext, and the
/// token registered with two consecutive codes of that plaintext.
fn imports(cipher: &Cipher) {
    if !peer_available("openssl", "openssl") {
        return;
    }
    let app = Appliance::new("");
    for (mac, name) in [(HMAC_SHA1, "sha1"), (HMAC_SHA256, "sha256")] {
        let serial = format!("{}-{name}", cipher.xmlenc);
        let case = build(cipher, mac, &serial);

        let mut wrong = case.key.clone();
        wrong[0] ^= 0x80; // not a DES parity bit: a different 3DES key too
        refused(&app, &case, &case.document, &wrong, "wrong pre-shared key");
        let mut tag = base64::engine::general_purpose::STANDARD
            .decode(&case.mac)
            .expect("mac");
        tag[0] ^= 1;
        let tampered = case
            .document
            .replace(&format!(">{}<", case.mac), &format!(">{}<", b64(&tag)));
        assert_ne!(tampered, case.document);
        refused(&app, &case, &tampered, &case.key, "ValueMAC does not match");
        let short = &case.key[..cipher.key_len - 8];
        let need = format!(
            "pre-shared key has {} bytes, the cipher needs {}",
            short.len(),
            cipher.key_len
        );
        refused(&app, &case, &case.document, short, &need);

        // The library opens openssl's file to openssl's plaintext.
        let keys = otpgate::otp::import::PskcKeys {
            pre_shared_key: Some(&case.key),
            password: None,
        };
        let report = otpgate::otp::import::import_file(case.document.as_bytes(), &keys)
            .unwrap_or_else(|e| panic!("{serial}: {e}"));
        assert_eq!(report.tokens.len(), 1, "{serial}");
        assert_eq!(report.tokens[0].serial, serial);
        assert_eq!(*report.tokens[0].secret, case.secret, "{serial}: secret");

        // The binary imports it, with the key in an owner-only file.
        let file = private_file(&app, &format!("{serial}.pskc"), &case.document);
        let key_file = private_file(
            &app,
            &format!("{serial}.hex"),
            &format!("{}\n", hex(&case.key)),
        );
        let out = app.cli_ok(
            &["token", "import", &file, "--pskc-key-file", &key_file],
            None,
        );
        assert!(
            out.contains("1 token(s) imported") && out.contains("(1 HOTP, 0 TOTP)"),
            "{serial}: {out}"
        );
        let shown = app.cli_ok(&["token", "show", &serial], None);
        assert!(shown.contains("unassigned"), "{serial}: {shown}");
        assert!(
            !shown.contains(&hex(&case.secret)),
            "secret leaked: {shown}"
        );

        // Registered with two consecutive codes of the plaintext secret: the stored seed is it.
        let user = format!("u-{name}");
        app.add_user(&user, "pw");
        app.cli_ok(
            &[
                "token",
                "register",
                &serial,
                &user,
                "--otp1",
                &code(&case.secret, 0),
                "--otp2",
                &code(&case.secret, 1),
            ],
            None,
        );
        let shown = app.cli_ok(&["token", "show", &serial, "--json"], None);
        let value: serde_json::Value = serde_json::from_str(&shown).expect("json");
        assert_eq!(value["state"], "active", "{serial}: {shown}");
        assert_eq!(value["owner"], user.as_str(), "{serial}: {shown}");
    }
}

#[test]
fn openssl_aes128_cbc_with_hmac_sha1_and_sha256() {
    imports(&AES128);
}

#[test]
fn openssl_aes192_cbc_with_hmac_sha1_and_sha256() {
    imports(&AES192);
}

#[test]
fn openssl_aes256_cbc_with_hmac_sha1_and_sha256() {
    imports(&AES256);
}

#[test]
fn openssl_tripledes_cbc_with_hmac_sha1_and_sha256() {
    imports(&TRIPLE_DES);
}
