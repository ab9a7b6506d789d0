//! Consistency verification: the seeded fault-injection harness behind `stasis torture`,
//! its checkers, and the adapter that lets the simulated database write into the
//! simulator's volumes. Scenario files (`stasis verify`) build on this.

pub mod demo;
pub mod mariadb;
pub mod sim_data;
pub mod torture;
