//! Scenario files (`scenarios/*.yaml`) and the `stasis verify` runner.
//!
//! Nothing is implemented here yet; the scenarios issue fills this crate.
