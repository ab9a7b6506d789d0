//! Consistency verification: the seeded fault-injection harness behind `stasis torture`,
//! its checkers, and the adapter that lets the simulated database write into the
//! simulator's volumes, and scenario files (`stasis verify`) that run campaigns on it.

pub mod demo;
pub mod ledger;
pub mod mariadb;
pub mod postgres;
pub mod sim_data;
pub mod torture;
pub mod verify;
pub mod writers;
