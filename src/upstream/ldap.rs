//! LDAP simple bind as the first factor: the user's password is right when the site's
//! directory accepts a bind as the user's entry.
//!
//! Each check opens a connection, sends one simple Bind request (RFC 4511 section 4.2, the
//! name/password mechanism of RFC 4513 section 5.1.3) with the DN made from
//! `bind_dn_template`, reads the BindResponse (RFC 4511 section 4.2.2), sends an Unbind
//! (RFC 4511 section 4.3) and closes. No connection is kept between checks, so no state can
//! carry over from one user's bind to the next.
//!
//! The verdict follows the resultCode (RFC 4511 section 4.1.9 and Appendix A):
//! `success` (0) accepts; `busy` (51), `unavailable` (52) and `unwillingToPerform` (53) say
//! that this server cannot decide now, so the next attempt (same server, then the next
//! server) is tried; every other code (`invalidCredentials` 49, `noSuchObject` 32,
//! `invalidDNSyntax` 34, ...) is the directory's answer and rejects at once. A connection
//! that fails, closes or does not answer within `timeout` also moves on; when every attempt
//! failed the verdict is [`Verdict::Unavailable`].
//!
//! Requests the directory must never see are refused locally: an empty password (RFC 4513
//! section 5.1.2: a bind with a name and an empty password is an *unauthenticated* bind,
//! which many servers answer with `success`), a password that is not UTF-8, and a user name
//! that is empty or holds control characters. The user name is escaped as a DN attribute
//! value (RFC 4514 section 2.4), so `alice,ou=admins` names the entry
//! `uid=alice\,ou\=admins,...`, never another subtree.
//!
//! Transport: `ldap://` sends the password in the clear (RFC 4513 section 6.3.1 advises
//! against it): use it on loopback or a protected network only. `ldaps://` is TLS from the
//! first byte, with rustls (ring) and the system's trust store (`/etc/ssl/certs`); StartTLS
//! and a site CA file are not supported yet. The password is never logged.

use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings};
use tokio::time::{timeout, timeout_at, Instant};
use tracing::debug;
use zeroize::Zeroizing;

use super::Verdict;

/// resultCode `busy` (RFC 4511 Appendix A.2): try the next attempt.
const BUSY: u32 = 51;
/// resultCode `unavailable`: try the next attempt.
const UNAVAILABLE: u32 = 52;
/// resultCode `unwillingToPerform`: try the next attempt.
const UNWILLING_TO_PERFORM: u32 = 53;
/// resultCodes that say the directory refuses this kind of bind, not this password
/// (RFC 4511 Appendix A.2): operationsError, protocolError, authMethodNotSupported,
/// strongerAuthRequired (e.g. Active Directory over ldap:// without signing),
/// confidentialityRequired, other. A configuration problem, so Unavailable with a warning
/// rather than a wrong password for everyone.
const REFUSES_THE_BIND: [u32; 6] = [1, 2, 7, 8, 13, 80];
/// How long the Unbind after an answered bind may take; the verdict is already known.
const UNBIND_GRACE: Duration = Duration::from_millis(500);

/// Checks passwords with an LDAP simple bind as the user (see the module documentation).
#[derive(Debug, Clone)]
pub struct LdapFirstFactor {
    servers: Vec<String>,
    bind_dn_template: String,
    timeout: Duration,
    retries: u32,
}

/// How one attempt against one server ended.
#[derive(Debug)]
enum Attempt {
    /// The server sent a BindResponse with this resultCode and diagnosticMessage.
    Answered { code: u32, message: String },
    /// No BindResponse: connection refused, TLS failure, timeout, connection closed...
    Failed(String),
}

impl LdapFirstFactor {
    /// `servers`: ldap:// (or ldaps://) URLs, tried in order (failover); `timeout` per attempt
    /// (connect + bind); `retries`: further attempts per server after the first.
    ///
    /// A URL is `ldap://host[:port][/]` or `ldaps://host[:port][/]` (RFC 4516 without the DN,
    /// attributes, scope, filter and extensions, which mean nothing for a bind); the default
    /// ports are 389 and 636. `bind_dn_template` must contain `{user}`, replaced by the
    /// escaped user name (e.g. `uid={user},ou=people,dc=example,dc=org`).
    ///
    /// Errors (a String naming the problem) for: no servers, a URL that is not ldap:// /
    /// ldaps:// (or has no host, a bad port, credentials or a path), a template without
    /// `{user}`, a zero timeout.
    pub fn new(
        servers: Vec<String>,
        bind_dn_template: String,
        timeout: Duration,
        retries: u32,
    ) -> Result<LdapFirstFactor, String> {
        if servers.is_empty() {
            return Err("ldap: no servers configured".to_string());
        }
        for url in &servers {
            check_url(url)?;
        }
        if !bind_dn_template.contains("{user}") {
            return Err(format!(
                "ldap: bind DN template {bind_dn_template:?} does not contain {{user}}"
            ));
        }
        if timeout.is_zero() {
            return Err("ldap: timeout must be greater than zero".to_string());
        }
        Ok(LdapFirstFactor {
            servers,
            bind_dn_template,
            timeout,
            retries,
        })
    }

    /// Binds as the user. Wrong password / no such entry (LDAP result 49 invalidCredentials,
    /// 32 noSuchObject...) -> Rejected (no further server is tried: the directory answered).
    /// Connection refused / timeout / server busy (51, 52, 53 unavailable) -> next attempt /
    /// next server; all failed -> Unavailable. An empty password is Rejected without
    /// contacting the server (RFC 4513 section 5.1.2: an empty password would be an
    /// unauthenticated bind that "succeeds"). A user name is escaped for a DN (RFC 4514
    /// section 2.4: `,`, `+`, `"`, `\`, `<`, `>`, `;`, `=`, leading space or `#`, trailing
    /// space, NUL) so `alice,ou=admins` cannot pick another entry; a user name with control
    /// characters is Rejected. The password may be arbitrary bytes; non-UTF-8 -> Rejected.
    ///
    /// Takes at most about `timeout * (retries + 1) * servers`. Dropping the future abandons
    /// the attempt in flight.
    pub async fn check(&self, user: &str, password: &[u8]) -> Verdict {
        if password.is_empty() {
            debug!(user, "ldap: empty password refused without a bind");
            return Verdict::Rejected;
        }
        if user.is_empty() || user.chars().any(char::is_control) {
            debug!(user = %user.escape_debug(), "ldap: user name refused");
            return Verdict::Rejected;
        }
        let Ok(password) = std::str::from_utf8(password) else {
            // The ldap3 client sends the password as a string; an LDAP password is an OCTET
            // STRING (RFC 4511 section 4.2), but no site's directory is known to need this.
            debug!(user, "ldap: password is not UTF-8, refused without a bind");
            return Verdict::Rejected;
        };
        let password = Zeroizing::new(password.to_string());
        let dn = self.bind_dn(user);
        let mut failures = Vec::with_capacity(self.servers.len());
        for server in &self.servers {
            let mut last = String::new();
            for attempt in 0..=self.retries {
                match self.attempt(server, &dn, &password).await {
                    Attempt::Answered { code: 0, .. } => return Verdict::Accepted,
                    Attempt::Answered { code, message }
                        if matches!(code, BUSY | UNAVAILABLE | UNWILLING_TO_PERFORM) =>
                    {
                        last = format!("result code {code} {message:?}");
                        debug!(server, attempt, reason = %last, "ldap: bind not processed");
                    }
                    Attempt::Answered { code, message } if REFUSES_THE_BIND.contains(&code) => {
                        tracing::warn!(server, code, message, "ldap: the directory refuses simple binds here (check the URL, TLS and bind_dn_template)");
                        return Verdict::Unavailable {
                            reason: format!("{server}: result code {code} {message:?}"),
                        };
                    }
                    Attempt::Answered { code, message } => {
                        debug!(server, user, code, message, "ldap: bind refused");
                        return Verdict::Rejected;
                    }
                    Attempt::Failed(reason) => {
                        debug!(server, attempt, reason, "ldap: attempt failed");
                        last = reason;
                    }
                }
            }
            failures.push(format!("{server}: {last}"));
        }
        Verdict::Unavailable {
            reason: format!(
                "no LDAP server answered ({} attempt(s) each): {}",
                u64::from(self.retries) + 1,
                failures.join("; ")
            ),
        }
    }

    /// The bind DN for `user`: the template with every `{user}` replaced by the escaped name.
    fn bind_dn(&self, user: &str) -> String {
        self.bind_dn_template
            .replace("{user}", &escape_dn_value(user))
    }

    /// One connect + bind against `url`, within `self.timeout`.
    ///
    /// The exchange runs in its own task: the ldap3 client panics on some malformed replies,
    /// and a server's bytes must not take down the caller's task. Dropping this future aborts
    /// the task.
    async fn attempt(&self, url: &str, dn: &str, password: &Zeroizing<String>) -> Attempt {
        if url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("ldaps://"))
        {
            ensure_crypto_provider();
        }
        let task = tokio::spawn(bind_once(
            url.to_string(),
            dn.to_string(),
            password.clone(),
            self.timeout,
        ));
        let abort = AbortOnDrop(task.abort_handle());
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => {
                Attempt::Failed("the LDAP client failed on the server's reply".to_string())
            }
            Err(_) => Attempt::Failed("attempt cancelled".to_string()),
        };
        drop(abort);
        outcome
    }
}

/// Connects, binds and unbinds; the connect and the bind share one deadline.
async fn bind_once(
    url: String,
    dn: String,
    password: Zeroizing<String>,
    limit: Duration,
) -> Attempt {
    let deadline = Instant::now() + limit;
    let connect = LdapConnAsync::with_settings(LdapConnSettings::new(), &url);
    let (conn, mut ldap) = match timeout_at(deadline, connect).await {
        Err(_) => return Attempt::Failed(format!("no connection within {limit:?}")),
        Ok(Err(e)) => return Attempt::Failed(format!("connect: {e}")),
        Ok(Ok(pair)) => pair,
    };
    // The connection is driven here rather than spawned (ldap3's `drive!`), so it ends with
    // this task.
    let mut driver = Box::pin(conn.drive());
    let bound = timeout_at(deadline, async {
        tokio::select! {
            result = ldap.simple_bind(&dn, &password) => result.map_err(|e| format!("bind: {e}")),
            end = &mut driver => Err(match end {
                Ok(()) => "connection closed before the bind response".to_string(),
                Err(e) => format!("connection: {e}"),
            }),
        }
    })
    .await;
    let result = match bound {
        Err(_) => return Attempt::Failed(format!("no bind response within {limit:?}")),
        Ok(Err(reason)) => return Attempt::Failed(reason),
        Ok(Ok(result)) => result,
    };
    // RFC 4511 section 4.3: Unbind, then close. Best effort: the verdict is known. Dropping
    // the handle after the Unbind lets the driver finish.
    let unbind = async move {
        let _ = ldap.unbind().await;
    };
    let _ = timeout(UNBIND_GRACE, async { tokio::join!(unbind, driver) }).await;
    Attempt::Answered {
        code: result.rc,
        message: result.text,
    }
}

/// Aborts the attempt's task when the attempt's future is dropped (the check was abandoned).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// ldap3 builds its rustls client config with the process-wide crypto provider. ring is the
/// only one this build enables, which rustls would pick by itself; installing it explicitly
/// keeps an ldaps:// bind from panicking should another provider ever be enabled as well.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err means another thread installed one meanwhile: there is one either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Checks that `url` is `ldap://host[:port][/]` or `ldaps://host[:port][/]`.
fn check_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("ldap: server {url:?}: {why}"));
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("ldap://")
        .or_else(|| lower.strip_prefix("ldaps://"))
    else {
        return bad("not an ldap:// or ldaps:// URL");
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return bad("a server URL takes no DN, attributes, filter or extensions");
    }
    if authority.contains('@') {
        return bad("a server URL takes no user name or password");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return bad("bad IPv6 address"),
            },
            None => return bad("bad IPv6 address"),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return bad("no host");
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("bad host");
    }
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
            return bad("bad port");
        }
    }
    Ok(())
}

/// Escapes `value` as an attribute value in a DN string (RFC 4514 section 2.4): a backslash
/// before `"`, `+`, `,`, `;`, `<`, `>`, `\`, `=` (the last one optional in RFC 4514, but no
/// user name needs it bare), a leading space or `#` and a trailing space; NUL as `\00`.
/// Everything else, UTF-8 included, is kept as it is.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    for (i, c) in value.char_indices() {
        let leading = i == 0;
        let trailing = i + c.len_utf8() == value.len();
        match c {
            '\0' => out.push_str("\\00"),
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            ' ' | '#' if leading => {
                out.push('\\');
                out.push(c);
            }
            ' ' if trailing => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "uid={user},ou=people,dc=example,dc=org";

    fn factor(servers: &[&str], template: &str) -> Result<LdapFirstFactor, String> {
        LdapFirstFactor::new(
            servers.iter().map(|s| s.to_string()).collect(),
            template.to_string(),
            Duration::from_secs(2),
            1,
        )
    }

    #[test]
    fn escapes_rfc4514_specials() {
        assert_eq!(escape_dn_value("alice"), "alice");
        assert_eq!(escape_dn_value("alice,ou=admins"), "alice\\,ou\\=admins");
        assert_eq!(
            escape_dn_value(r#"a"b+c;d<e>f\g"#),
            r#"a\"b\+c\;d\<e\>f\\g"#
        );
        assert_eq!(escape_dn_value("a\0b"), "a\\00b");
        assert_eq!(escape_dn_value("*"), "*");
    }

    #[test]
    fn escapes_leading_and_trailing_only_where_rfc4514_says() {
        assert_eq!(escape_dn_value(" alice "), "\\ alice\\ ");
        assert_eq!(escape_dn_value("a b"), "a b");
        assert_eq!(escape_dn_value("#alice"), "\\#alice");
        assert_eq!(escape_dn_value("al#ice#"), "al#ice#");
        assert_eq!(escape_dn_value(" "), "\\ ");
        assert_eq!(escape_dn_value("  "), "\\ \\ ");
        assert_eq!(escape_dn_value(""), "");
    }

    #[test]
    fn keeps_utf8() {
        assert_eq!(escape_dn_value("jürgen"), "jürgen");
        assert_eq!(escape_dn_value("日本 "), "日本\\ ");
    }

    #[test]
    fn bind_dn_replaces_every_placeholder() {
        let f = factor(&["ldap://127.0.0.1"], TEMPLATE).expect("valid");
        assert_eq!(
            f.bind_dn("bob,ou=admins"),
            "uid=bob\\,ou\\=admins,ou=people,dc=example,dc=org"
        );
        let f = factor(&["ldap://127.0.0.1"], "cn={user},ou={user}s,dc=x").expect("valid");
        assert_eq!(f.bind_dn("a+b"), "cn=a\\+b,ou=a\\+bs,dc=x");
    }

    #[test]
    fn new_accepts_ldap_and_ldaps_urls() {
        for url in [
            "ldap://127.0.0.1",
            "ldap://127.0.0.1:389/",
            "LDAP://Directory.Example.org:10389",
            "ldaps://ldap.example.org",
            "ldaps://[::1]:636/",
            "ldap://[::1]",
        ] {
            assert!(factor(&[url], TEMPLATE).is_ok(), "{url}");
        }
    }

    #[test]
    fn new_refuses_no_servers() {
        let err = factor(&[], TEMPLATE).expect_err("no servers");
        assert!(err.contains("no servers"), "{err}");
    }

    #[test]
    fn new_refuses_bad_urls() {
        for (url, why) in [
            ("http://127.0.0.1", "not an ldap"),
            ("127.0.0.1:389", "not an ldap"),
            ("ldapi:///var/run/slapd.sock", "not an ldap"),
            ("ldap:127.0.0.1", "not an ldap"),
            ("ldap://", "no host"),
            ("ldap:///", "no host"),
            ("ldap://:389", "no host"),
            ("ldap://host:0", "bad port"),
            ("ldap://host:99999", "bad port"),
            ("ldap://host:", "bad port"),
            ("ldap://host:x", "bad port"),
            ("ldap://host/dc=example,dc=org", "no DN"),
            ("ldap://host/??sub", "no DN"),
            ("ldap://cn=admin:pw@host", "no user name"),
            ("ldap://[::1", "IPv6"),
            ("ldap://[::1]x", "IPv6"),
            ("ldap://bad host", "bad host"),
        ] {
            let err = factor(&["ldap://127.0.0.1", url], TEMPLATE).expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
            assert!(err.contains(url), "{url}: {err}");
        }
    }

    #[test]
    fn new_refuses_template_without_user() {
        let err = factor(&["ldap://127.0.0.1"], "uid=alice,dc=example,dc=org")
            .expect_err("no placeholder");
        assert!(err.contains("{user}"), "{err}");
        assert!(factor(&["ldap://127.0.0.1"], "uid={User},dc=x").is_err());
    }

    #[test]
    fn new_refuses_zero_timeout() {
        let err = LdapFirstFactor::new(
            vec!["ldap://127.0.0.1".to_string()],
            TEMPLATE.to_string(),
            Duration::ZERO,
            0,
        )
        .expect_err("zero timeout");
        assert!(err.contains("timeout"), "{err}");
    }

    #[tokio::test]
    async fn refuses_locally_without_contacting_a_server() {
        // Port 1 on loopback: were anything sent, the verdict would be Unavailable.
        let f = factor(&["ldap://127.0.0.1:1"], TEMPLATE).expect("valid");
        assert_eq!(f.check("alice", b"").await, Verdict::Rejected);
        assert_eq!(f.check("", b"pw").await, Verdict::Rejected);
        assert_eq!(f.check("ali\nce", b"pw").await, Verdict::Rejected);
        assert_eq!(f.check("ali\0ce", b"pw").await, Verdict::Rejected);
        assert_eq!(f.check("alice", b"\xff\xfe").await, Verdict::Rejected);
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        let f = factor(&["ldap://127.0.0.1:1"], TEMPLATE).expect("valid");
        match f.check("alice", b"pw").await {
            Verdict::Unavailable { reason } => {
                assert!(reason.contains("ldap://127.0.0.1:1"), "{reason}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
