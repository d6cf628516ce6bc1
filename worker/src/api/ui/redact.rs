//! Params as the console shows them. Stored params carry secrets only as references
//! (`{"secret": "name"}`), which the API shows as they are and so does the console; on top
//! of that, any string under a key that names a credential (`password`, `token`,
//! `authorization`, ...) is shown as `***`, so a value someone put in plain params by
//! mistake is not displayed to everyone who opens the page.

use serde_json::Value;

/// The marker that replaces a hidden value (the same as in container logs).
pub const REDACTED: &str = crate::docker::secrets::REDACTED;

/// Key fragments that mark a credential.
const CREDENTIAL_KEYS: &[&str] = &[
    "password",
    "passwd",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "secret_value",
];

fn is_credential_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    CREDENTIAL_KEYS.iter().any(|c| k.contains(c))
}

/// A copy of `v` with credential-looking string values replaced by `***`. Secret
/// references (an object `{"secret": NAME}`) are names, not values, and stay.
pub fn for_display(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let shown = match v {
                        Value::String(_) | Value::Number(_) if is_credential_key(k) => {
                            Value::String(REDACTED.into())
                        }
                        other => for_display(other),
                    };
                    (k.clone(), shown)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(for_display).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_are_masked_references_kept() {
        let params = json!({
            "image": "alpine",
            "env": {"DB_PASSWORD": "hunter2", "MODE": "fast", "API": {"secret": "api-key"}},
            "registry_auth": {"username": "u", "password": "p4ss"},
            "args": [{"token": "abc"}, "plain"]
        });
        let shown = for_display(&params);
        let text = shown.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("p4ss") && !text.contains("\"abc\""),
            "{text}"
        );
        assert_eq!(shown["env"]["DB_PASSWORD"], REDACTED);
        assert_eq!(shown["env"]["MODE"], "fast");
        assert_eq!(shown["env"]["API"], json!({"secret": "api-key"}));
        assert_eq!(shown["registry_auth"]["username"], "u");
        assert_eq!(shown["args"][1], "plain");
        assert_eq!(shown["image"], "alpine");
    }
}
