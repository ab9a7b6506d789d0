//! Application plugins: the simulated database first; MySQL/MariaDB, PostgreSQL, and exec hooks for any other app.
pub mod simdb;
pub mod mysql;
pub mod exec;
pub mod postgres;
