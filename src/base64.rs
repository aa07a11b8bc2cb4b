//! Base64 (RFC 4648 §4, standard alphabet, padded) for the two places xsgw meets it: the
//! SASL EXTERNAL authorization identity (XEP-0178) and the first message Microsoft clients
//! put in an IM-session INVITE (`Ms-Text-Format: …; ms-body=`). Bounded, never panics.

/// Encodes standard base64 with padding (RFC 4648 §4).
pub fn encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (n >> (18 - 6 * i)) & 63;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with padding (RFC 4648 §4); `None` for anything else or for
/// text longer than `max` bytes.
pub fn decode(text: &str, max: usize) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 || bytes.len() > max {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (n, quad) in bytes.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && n + 1 != quads) {
            return None;
        }
        let mut acc = 0u32;
        for &c in quad.get(..4 - pad)? {
            acc = acc << 6 | value(c)?;
        }
        acc <<= 6 * pad as u32;
        let [_, a, b, c] = acc.to_be_bytes();
        out.extend_from_slice([a, b, c].get(..3 - pad)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_both_ways_and_garbage_refused() {
        for (raw, text) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(raw.as_bytes()), text);
            assert_eq!(decode(text, 64).as_deref(), Some(raw.as_bytes()), "{text}");
        }
        for bad in ["Zm9v YmFy", "Zm9v!", "Y===", "Zm9vYg", "Z", "Zg==Zg=="] {
            assert_eq!(decode(bad, 64), None, "{bad}");
        }
        assert_eq!(decode("Zm9vYmFy", 4), None, "over the bound");
    }
}
