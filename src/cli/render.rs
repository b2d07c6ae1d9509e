//! Text renderings of the API's JSON answers for the terminal; `--json` prints the answer
//! itself.

use serde_json::Value;

fn field(value: &Value, name: &str) -> String {
    match &value[name] {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A token's status.
pub fn token(view: &Value) -> String {
    let mut lines = vec![
        format!("serial:        {}", field(view, "serial")),
        format!("state:         {}", field(view, "state")),
        format!("owner:         {}", field(view, "owner")),
    ];
    if !view["former_owner"].is_null() {
        lines.push(format!("former owner:  {}", field(view, "former_owner")));
    }
    lines.extend([
        format!(
            "type:          {} {} digits, {}",
            field(view, "kind"),
            field(view, "digits"),
            field(view, "algorithm")
        ),
        format!("level:         {}", field(view, "level")),
        format!(
            "origin:        {}{}",
            field(view, "origin"),
            view["sponsor"]
                .as_str()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ),
        format!("expires:       {}", field(view, "expires_at")),
        format!("last auth:     {}", field(view, "last_auth_at")),
        format!("failures:      {}", field(view, "failures")),
        format!("state since:   {}", field(view, "state_changed_at")),
    ]);
    if !view["suspended_by"].is_null() {
        lines.push(format!("suspended by:  {}", field(view, "suspended_by")));
    }
    for (name, label) in [
        ("registration_failures", "failed registrations"),
        ("resync_failures", "failed resyncs"),
    ] {
        if view[name].as_u64().unwrap_or(0) > 0 {
            lines.push(format!("{label}: {}", field(view, name)));
        }
    }
    lines.join("\n")
}

/// A user and the status of its token.
pub fn user(view: &Value) -> String {
    let name = ["first_name", "middle_name", "last_name"]
        .iter()
        .filter_map(|n| view[*n].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let mut lines = vec![
        format!("username:      {}", field(view, "username")),
        format!(
            "name:          {}",
            if name.is_empty() { "-" } else { &name }
        ),
        format!("email:         {}", field(view, "email")),
        format!("organization:  {}", field(view, "organization")),
        format!("level:         {}", field(view, "assurance_level")),
        format!("password:      {}", field(view, "password_scheme")),
    ];
    let token = &view["token"];
    if token.is_null() {
        lines.push("token:         none".into());
    } else {
        lines.push(format!(
            "token:         {} ({})",
            field(token, "serial"),
            field(token, "state")
        ));
        lines.push(format!("failures:      {}", field(token, "failures")));
        lines.push(format!("last auth:     {}", field(token, "last_auth_at")));
        lines.push(format!("expires:       {}", field(token, "expires_at")));
    }
    lines.join("\n")
}

/// A lifecycle action's answer.
pub fn action(view: &Value) -> String {
    format!(
        "token {}: {} -> {}",
        field(&view["token"], "serial"),
        field(view, "from"),
        field(view, "to")
    )
}

/// Audit entries, one per line.
pub fn audit(view: &Value) -> String {
    view["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    format!(
                        "{} {} by {} ({}) serial={} user={} {} -> {} {}",
                        field(e, "at"),
                        field(e, "action"),
                        field(e, "by"),
                        field(e, "actor"),
                        field(e, "serial"),
                        field(e, "username"),
                        field(e, "from"),
                        field(e, "to"),
                        e["reason"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// A page of tokens, one per line.
pub fn token_list(view: &Value) -> String {
    let mut lines: Vec<String> = view["tokens"]
        .as_array()
        .map(|tokens| {
            tokens
                .iter()
                .map(|t| {
                    format!(
                        "{:<20} {:<18} owner={} expires={}",
                        field(t, "serial"),
                        field(t, "state"),
                        field(t, "owner"),
                        field(t, "expires_at")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(next) = view["next"].as_str() {
        lines.push(format!("(more: --after {next})"));
    }
    lines.join("\n")
}
