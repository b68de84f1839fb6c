//! YAML that every reader takes the same way. `kubectl apply -f` (go-yaml v2) and PyYAML
//! read YAML 1.1, where `yes`, `on`, `y`, `0755`, `1:30` or `2026-01-01` are not strings;
//! a string Herd renders must stay a string there, so every string that a YAML 1.1 (or
//! 1.2) reader could take for something else is double-quoted. The output is block style,
//! as kubectl prints it; multi-line strings are literal blocks where that is exact.

use serde_json::Value;

/// One document (no `---`).
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => object(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => array(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

fn pad(n: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn object(m: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            pad(indent, out);
        }
        // A key is never a block scalar.
        out.push_str(&if plain_is_safe(k) {
            k.clone()
        } else {
            quoted(k)
        });
        out.push(':');
        value_after_key(v, indent, out);
    }
}

fn value_after_key(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            pad(indent + 2, out);
            object(m, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            pad(indent, out);
            array(a, indent, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other, indent + 2));
            out.push('\n');
        }
    }
}

fn array(a: &[Value], indent: usize, out: &mut String) {
    for (i, v) in a.iter().enumerate() {
        if i > 0 {
            pad(indent, out);
        }
        out.push_str("- ");
        match v {
            Value::Object(m) if !m.is_empty() => object(m, indent + 2, out),
            Value::Array(inner) if !inner.is_empty() => array(inner, indent + 2, out),
            other => {
                out.push_str(&scalar(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn scalar(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s, indent),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// The words YAML 1.1 reads as booleans or null.
const WORDS: [&str; 26] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~",
];

/// Whether `s` may be written plain: it reads back as this very string in YAML 1.1 and
/// 1.2. Conservative: anything starting like a number, a sign or a YAML indicator is
/// quoted.
pub fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    !(WORDS.contains(&s)
        || s == "<<"
        || s == "="
        || first.is_ascii_digit()
        || "-+.?:,[]{}#&*!|>'\"%@`~=<".contains(first)
        || first.is_whitespace()
        || s.ends_with(char::is_whitespace)
        || s.ends_with(':')
        || s.contains(": ")
        || s.contains(" #")
        || s.chars()
            .any(|c| c.is_control() || is_yaml_break(c) || c == '\u{feff}'))
}

/// Characters YAML 1.1 reads as line breaks besides `\n` and `\r`.
fn is_yaml_break(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// A double-quoted scalar: a JSON string (valid YAML), with the line breaks JSON leaves
/// alone escaped too.
fn quoted(s: &str) -> String {
    let json = serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"));
    json.replace('\u{85}', "\\u0085")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn string(s: &str, indent: usize) -> String {
    if plain_is_safe(s) {
        return s.to_owned();
    }
    if let Some(block) = literal_block(s, indent) {
        return block;
    }
    quoted(s)
}

/// A literal block (`|`, `|-`) for a multi-line string, when it reads back exactly: no
/// carriage returns or other control characters but newlines and tabs, no leading space
/// on the first line, no trailing blank lines.
fn literal_block(s: &str, indent: usize) -> Option<String> {
    if !s.contains('\n')
        || s.starts_with([' ', '\t', '\n'])
        || s.ends_with("\n\n")
        || s.chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || is_yaml_break(c))
        || s.lines().any(|l| l.ends_with([' ', '\t']))
    {
        return None;
    }
    let (body, header) = match s.strip_suffix('\n') {
        Some(b) => (b, "|"),
        None => (s, "|-"),
    };
    let mut out = String::from(header);
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', indent.max(2)));
            out.push_str(line);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_1_1_look_alikes_are_quoted() {
        for s in [
            "yes",
            "on",
            "Off",
            "y",
            "~",
            "0755",
            "1:30",
            "2026-01-01",
            "1e3",
            ".inf",
            "-",
            "<<",
            "",
        ] {
            assert!(!plain_is_safe(s), "{s}");
        }
        for s in [
            "mastodon",
            "app.kubernetes.io/name",
            "redis-server",
            "herd-lyon",
            "/opt/mastodon/tmp",
        ] {
            assert!(plain_is_safe(s), "{s}");
        }
    }

    #[test]
    fn reads_back_as_written_by_serde_yaml() {
        let v = json!({
            "command": ["redis-server", "--appendonly", "yes", "--dir", "/data"],
            "data": { "script": "set -eu\necho 'a: b'\n", "noeol": "a\nb", "empty": "", "n": 3, "t": true, "z": null },
            "list": [{ "a": 1, "b": [1, 2] }, [], {}, [["x"]]],
            "key: odd": "#comment-like",
            "multi\nline key": "line\u{2028}separator and next\u{85}line",
        });
        let text = to_string(&v);
        let back: Value = serde_yaml::from_str(&text).expect("YAML 1.2 reads it");
        assert_eq!(back, v, "{text}");
        assert!(text.contains("- \"yes\""), "{text}");
    }
}
