//! Scenario tests of the bridge: both sides driven by hand, every action checked.
