//! The command line's commands that go through the admin API ([`otpgate::api::client`]):
//! they work while `otpgate serve` runs (over its control socket) and when it is stopped
//! (in-process), with the same answers. Bulk imports stay offline (see `main.rs`).

pub mod render;

use anyhow::{bail, Result};
use axum::http::Method;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use otpgate::api::client;
use otpgate::config::Settings;

/// Characters left as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` as one path segment.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// Sends `method path` (with a JSON `body`) and returns the answer's JSON, or the API's error
/// message as the error.
pub fn ask(settings: &Settings, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
    let answer = client::call(settings, method, path, body)?;
    if answer.status.is_success() {
        return Ok(answer.body);
    }
    let message = answer.body["message"]
        .as_str()
        .unwrap_or("the request failed")
        .to_string();
    bail!("{message}")
}
