//! The static hosts table: xsgw's `[hosts]` section, consulted before DNS.
//!
//! Owns: [`StaticHosts`], a bounded map from normalised host name to addresses. Lookups are
//! case-insensitive and ignore a trailing dot. Out of scope: reading `/etc/hosts` (the operator
//! says in xsgw's own configuration which names bypass DNS).

use std::collections::HashMap;
use std::net::IpAddr;

use super::error::DnsError;
use super::name::normalize;

/// Entries a table may hold.
pub const MAX_HOSTS: usize = 4_096;
/// Addresses one entry may hold.
pub const MAX_ADDRS_PER_HOST: usize = 32;

/// Names pinned to addresses, consulted before DNS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticHosts {
    entries: HashMap<String, Vec<IpAddr>>,
}

impl StaticHosts {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds addresses for `name` (appended to any it already has, duplicates dropped).
    pub fn insert(&mut self, name: &str, addrs: &[IpAddr]) -> Result<(), DnsError> {
        let name = normalize(name)?;
        if !self.entries.contains_key(&name) && self.entries.len() >= MAX_HOSTS {
            return Err(DnsError::TooLarge {
                what: "static hosts table",
                len: self.entries.len() + 1,
                max: MAX_HOSTS,
            });
        }
        let entry = self.entries.entry(name).or_default();
        for addr in addrs {
            if !entry.contains(addr) {
                if entry.len() >= MAX_ADDRS_PER_HOST {
                    return Err(DnsError::TooLarge {
                        what: "addresses for one static host",
                        len: entry.len() + 1,
                        max: MAX_ADDRS_PER_HOST,
                    });
                }
                entry.push(*addr);
            }
        }
        Ok(())
    }

    /// The addresses pinned for `name`, if any. Invalid names are simply not found.
    pub fn get(&self, name: &str) -> Option<&[IpAddr]> {
        let name = normalize(name).ok()?;
        self.entries
            .get(&name)
            .map(Vec::as_slice)
            .filter(|a| !a.is_empty())
    }

    /// Number of names in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table has no names.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_trailing_dot_insensitive() {
        let mut hosts = StaticHosts::new();
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        let b: IpAddr = "2001:db8::10".parse().unwrap();
        hosts.insert("Edge.Corp.Example.", &[a, b, a]).unwrap();
        assert_eq!(hosts.get("edge.corp.example"), Some(&[a, b][..]));
        assert_eq!(hosts.get("EDGE.CORP.EXAMPLE."), Some(&[a, b][..]));
        assert_eq!(hosts.get("other.example"), None);
        assert_eq!(hosts.get("bad..name"), None);
        assert_eq!(hosts.len(), 1);
    }

    #[test]
    fn empty_entry_is_not_found() {
        let mut hosts = StaticHosts::new();
        hosts.insert("x.example", &[]).unwrap();
        assert_eq!(hosts.get("x.example"), None);
    }

    #[test]
    fn invalid_name_refused() {
        let mut hosts = StaticHosts::new();
        assert!(matches!(
            hosts.insert("a b", &[]),
            Err(DnsError::InvalidName { .. })
        ));
    }

    #[test]
    fn bounded() {
        let mut hosts = StaticHosts::new();
        let addrs: Vec<IpAddr> = (0..=MAX_ADDRS_PER_HOST as u32)
            .map(|i| IpAddr::from(i.to_be_bytes()))
            .collect();
        assert!(matches!(
            hosts.insert("many.example", &addrs),
            Err(DnsError::TooLarge {
                max: MAX_ADDRS_PER_HOST,
                ..
            })
        ));
    }
}
