//! The figures as one flat JSON object (written by hand: a dozen lines, no crate), and the
//! reading of `target/bench/peers.json`, a flat object written by the peers' bench.

use std::fmt::Write as _;

/// A figure.
#[derive(Debug, Clone)]
pub enum Value {
    Num(f64),
    Int(i64),
    Str(String),
    /// JSON text as found in peers.json.
    Raw(String),
}

/// Keys in insertion order.
#[derive(Debug, Default)]
pub struct Figures(pub Vec<(String, Value)>);

impl Figures {
    pub fn num(&mut self, key: impl Into<String>, v: f64) {
        self.set(key.into(), Value::Num(v));
    }
    pub fn int(&mut self, key: impl Into<String>, v: u64) {
        self.set(key.into(), Value::Int(v as i64));
    }
    pub fn str(&mut self, key: impl Into<String>, v: impl Into<String>) {
        self.set(key.into(), Value::Str(v.into()));
    }
    pub fn set(&mut self, key: String, v: Value) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = v,
            None => self.0.push((key, v)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_num(&self, key: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| match v {
                Value::Num(n) => Some(*n),
                Value::Int(n) => Some(*n as f64),
                Value::Raw(r) => r.parse().ok(),
                Value::Str(_) => None,
            })
    }

    pub fn to_json(&self) -> String {
        let mut s = String::from("{\n");
        for (i, (k, v)) in self.0.iter().enumerate() {
            let _ = write!(s, "  {}: ", quote(k));
            match v {
                Value::Num(n) if n.is_finite() => {
                    let _ = write!(s, "{}", (n * 1000.0).round() / 1000.0);
                }
                Value::Num(_) => s.push_str("null"),
                Value::Int(n) => {
                    let _ = write!(s, "{n}");
                }
                Value::Str(t) => s.push_str(&quote(t)),
                Value::Raw(r) => s.push_str(r),
            }
            s.push_str(if i + 1 < self.0.len() { ",\n" } else { "\n" });
        }
        s.push_str("}\n");
        s
    }
}

fn quote(text: &str) -> String {
    let mut s = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// The members of a JSON object's text, each value as raw JSON text; `None` if it is not
/// an object. Nested values are kept whole.
pub fn members(text: &str) -> Option<Vec<(String, String)>> {
    let b = text.trim().as_bytes();
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return None;
    }
    let inner = &text.trim()[1..text.trim().len() - 1];
    let mut out = Vec::new();
    let bytes = inner.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && (bytes[*i] as char).is_whitespace() {
            *i += 1;
        }
    };
    let string_end = |start: usize| -> Option<usize> {
        // start at the opening quote; returns the index after the closing quote
        let mut j = start + 1;
        while j < bytes.len() {
            match bytes[j] {
                b'\\' => j += 2,
                b'"' => return Some(j + 1),
                _ => j += 1,
            }
        }
        None
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            break;
        }
        if bytes[i] != b'"' {
            return None;
        }
        let kend = string_end(i)?;
        let key = inner[i + 1..kend - 1].replace("\\\"", "\"");
        i = kend;
        skip_ws(&mut i);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        let vstart = i;
        let mut depth = 0i32;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    i = string_end(i)?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth -= 1,
                b',' if depth == 0 => break,
                _ => {}
            }
            i += 1;
        }
        out.push((key, inner[vstart..i].trim().to_string()));
        if i < bytes.len() {
            i += 1;
        }
    }
    Some(out)
}
