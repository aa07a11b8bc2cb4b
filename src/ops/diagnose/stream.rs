//! `partner.stream` (`--deep`): not written yet.

use super::dns::PartnerTargets;
use super::report::Finding;
use super::Setup;
use crate::config::Credentials;

pub fn checks(
    _setup: &Setup,
    _credentials: Option<&Credentials>,
    targets: &[PartnerTargets],
) -> Vec<Finding> {
    targets
        .iter()
        .map(|p| Finding::warn("partner.stream", p.domain.clone(), "not tested yet", ""))
        .collect()
}
