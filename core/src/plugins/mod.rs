//! Application plugins: the simulated database first; MySQL/MariaDB, PostgreSQL and exec hooks follow.
pub mod simdb;
pub mod mysql;
