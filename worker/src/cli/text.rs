//! Text from outside (container output, stored params and results) as the CLI prints it
//! to a terminal: control characters shown as visible escapes, so a container cannot
//! colour, retitle or clear the operator's terminal, or rewrite a line with `\r`.
//!
//! One rule for every command: [`for_terminal`] for plain text (log lines, table cells),
//! [`json_for_terminal`] for JSON output, which stays valid JSON for the same value.

use serde_json::Value;
use std::borrow::Cow;
use std::fmt::Write;

/// Characters a terminal may act on instead of showing: C0 controls but the tab, DEL,
/// C1 controls (U+0080..U+009F: some terminals read U+009B as CSI), and the bidi
/// overrides and isolates that make a line read differently from its bytes.
fn acts_on_terminal(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every such character written as `\u{1b}` (its code point in hex); the tab
/// is kept. Borrowed when there is nothing to escape.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(acts_on_terminal) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if acts_on_terminal(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `v` as JSON (compact or pretty) in which no character a terminal acts on is left raw:
/// serde_json escapes C0 controls itself; DEL, C1 controls and the bidi characters,
/// which it leaves raw, can only stand inside strings, where `\uXXXX` is the same
/// character to any JSON reader.
pub fn json_for_terminal(v: &Value, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    }
    .unwrap_or_else(|_| "null".into());
    if !text.chars().any(|c| c > '\u{7e}' && acts_on_terminal(c)) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c > '\u{7e}' && acts_on_terminal(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_what_a_terminal_would_act_on_and_keeps_tabs() {
        let hostile = "\u{1b}[31mred\u{1b}]0;title\u{7}\r\u{1b}[2J\tok\u{9b}\u{202e}\u{7f}";
        let shown = for_terminal(hostile);
        assert_eq!(
            shown,
            "\\u{1b}[31mred\\u{1b}]0;title\\u{7}\\u{d}\\u{1b}[2J\tok\\u{9b}\\u{202e}\\u{7f}"
        );
        assert!(!shown.chars().any(acts_on_terminal));
        assert!(matches!(for_terminal("plain line"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_stays_the_same_value_with_nothing_raw() {
        let v = json!({"line": "a\u{1b}b\u{9b}c\u{202e}d\u{7f}", "n": 1});
        for pretty in [false, true] {
            let text = json_for_terminal(&v, pretty);
            assert!(
                !text.chars().any(|c| acts_on_terminal(c) && c != '\n'),
                "{text:?}"
            );
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
        }
    }
}
