//! The few facts xsgw reads out of an X.509 certificate for operators: subject common names,
//! DNS subject alternative names and the validity period, for messages only.
//!
//! Whether a certificate is good for a name is never decided here: that is webpki's name
//! validation ([`super::names`]). What this reads is what an error message or `xsgw check`
//! must say ("certificate names other.example, valid until ..."; a CN shown so an operator
//! sees why a CN-only certificate names nothing). This is a minimal, bounded DER walker for
//! that (RFC 5280 §4.1): it reads only the TBSCertificate fields it needs and fails cleanly
//! on anything it does not understand.

/// What a certificate names and when it is valid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertSummary {
    /// Subject commonName values (OID 2.5.4.3), as text.
    pub common_names: Vec<String>,
    /// subjectAltName dNSName entries (OID 2.5.29.17, tag `[2]`).
    pub dns_names: Vec<String>,
    /// notBefore / notAfter as seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertSummary {
    /// Every name, SAN first, for messages.
    pub fn all_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.dns_names.iter().map(String::as_str).collect();
        for cn in &self.common_names {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(cn)) {
                names.push(cn);
            }
        }
        names
    }
}

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerError(pub &'static str);

impl std::fmt::Display for DerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed certificate: {}", self.0)
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const CONTEXT_0: u8 = 0xa0;
const CONTEXT_3: u8 = 0xa3;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const SAN_DNS_NAME: u8 = 0x82;

const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// Reads the summary of one DER-encoded certificate.
pub fn summarize(der: &[u8]) -> Result<CertSummary, DerError> {
    let mut outer = Der::new(der);
    let mut certificate = outer.expect(SEQUENCE, "certificate is not a SEQUENCE")?;
    let mut tbs = certificate.expect(SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    if tbs.peek_tag() == Some(CONTEXT_0) {
        tbs.any()?; // version
    }
    tbs.any()?; // serialNumber
    tbs.any()?; // signature algorithm
    tbs.any()?; // issuer
    let mut validity = tbs.expect(SEQUENCE, "validity is not a SEQUENCE")?;
    let not_before = validity.time()?;
    let not_after = validity.time()?;
    let subject = tbs.expect(SEQUENCE, "subject is not a SEQUENCE")?;
    tbs.any()?; // subjectPublicKeyInfo
    let mut summary = CertSummary {
        not_before,
        not_after,
        common_names: common_names(subject)?,
        ..CertSummary::default()
    };
    while !tbs.is_empty() {
        let (tag, mut body) = tbs.next()?;
        if tag != CONTEXT_3 {
            continue; // issuerUniqueID, subjectUniqueID
        }
        let mut extensions = body.expect(SEQUENCE, "extensions are not a SEQUENCE")?;
        while !extensions.is_empty() {
            let mut extension = extensions.expect(SEQUENCE, "extension is not a SEQUENCE")?;
            let oid = extension.expect(OID, "extension has no OID")?;
            if extension.peek_tag() == Some(0x01) {
                extension.any()?; // critical
            }
            let value = extension.expect(OCTET_STRING, "extension value is not an OCTET STRING")?;
            if oid.bytes == OID_SUBJECT_ALT_NAME {
                let mut value = value;
                let mut names = value.expect(SEQUENCE, "subjectAltName is not a SEQUENCE")?;
                while !names.is_empty() {
                    let (tag, name) = names.next()?;
                    if tag == SAN_DNS_NAME {
                        summary.dns_names.push(text(name.bytes)?);
                    }
                }
            }
        }
    }
    Ok(summary)
}

fn common_names(mut subject: Der<'_>) -> Result<Vec<String>, DerError> {
    let mut names = Vec::new();
    while !subject.is_empty() {
        let mut rdn = subject.expect(SET, "name component is not a SET")?;
        while !rdn.is_empty() {
            let mut attribute = rdn.expect(SEQUENCE, "attribute is not a SEQUENCE")?;
            let oid = attribute.expect(OID, "attribute has no OID")?;
            let (_, value) = attribute.next()?;
            if oid.bytes == OID_COMMON_NAME {
                names.push(text(value.bytes)?);
            }
        }
    }
    Ok(names)
}

fn text(bytes: &[u8]) -> Result<String, DerError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DerError("a name is not UTF-8 text"))
}

/// A cursor over DER content.
struct Der<'a> {
    bytes: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Der { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.bytes.first().copied()
    }

    /// The next TLV as (tag, content).
    fn next(&mut self) -> Result<(u8, Der<'a>), DerError> {
        let truncated = DerError("truncated");
        let (&tag, rest) = self.bytes.split_first().ok_or(truncated.clone())?;
        if tag & 0x1f == 0x1f {
            return Err(DerError("multi-byte tags are not used in certificates"));
        }
        let (&first, mut rest) = rest.split_first().ok_or(truncated.clone())?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return Err(DerError("bad length"));
            }
            let (len_bytes, after) = rest.split_at(count);
            rest = after;
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if rest.len() < len {
            return Err(truncated);
        }
        let (content, after) = rest.split_at(len);
        self.bytes = after;
        Ok((tag, Der::new(content)))
    }

    fn any(&mut self) -> Result<Der<'a>, DerError> {
        self.next().map(|(_, content)| content)
    }

    fn expect(&mut self, tag: u8, message: &'static str) -> Result<Der<'a>, DerError> {
        match self.next()? {
            (t, content) if t == tag => Ok(content),
            _ => Err(DerError(message)),
        }
    }

    fn time(&mut self) -> Result<i64, DerError> {
        let (tag, content) = self.next()?;
        let s = std::str::from_utf8(content.bytes).map_err(|_| DerError("bad time"))?;
        let (year, rest) = match tag {
            UTC_TIME if s.len() == 13 => {
                let yy: i64 = digits(&s[0..2])?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
            }
            GENERALIZED_TIME if s.len() == 15 => (digits(&s[0..4])?, &s[4..]),
            _ => return Err(DerError("validity time is not UTCTime or GeneralizedTime")),
        };
        if !rest.ends_with('Z') {
            return Err(DerError("validity time is not in UTC"));
        }
        let month = digits(&rest[0..2])?;
        let day = digits(&rest[2..4])?;
        let hour = digits(&rest[4..6])?;
        let minute = digits(&rest[6..8])?;
        let second = digits(&rest[8..10])?;
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return Err(DerError("validity date out of range"));
        }
        Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
    }
}

fn digits(s: &str) -> Result<i64, DerError> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DerError("bad digits in time"));
    }
    s.parse().map_err(|_| DerError("bad digits in time"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats seconds since the epoch as `YYYY-MM-DD` for messages.
pub fn format_date(epoch_seconds: i64) -> String {
    let days = epoch_seconds.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(
            format_date(days_from_civil(2026, 11, 25) * 86_400),
            "2026-11-25"
        );
        assert_eq!(
            format_date(days_from_civil(2000, 2, 29) * 86_400 + 5),
            "2000-02-29"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(summarize(&[]).is_err());
        assert!(summarize(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(summarize(&[0x30, 0x03, 0x30, 0x01]).is_err());
        let mut seed = 0x1234_5678_u32;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = summarize(&bytes);
        }
    }
}
