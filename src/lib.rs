//! The `stasis` product face: the config file, the config-driven commands, and (as a
//! library, so `stasis demo` can host it over in-process simulators) the REST API and
//! web dashboard of `stasis serve`.

pub mod cli;
pub mod config;
pub mod demo_cmd;
pub mod dr_cmd;
pub mod metrics;
pub mod runtime;
pub mod serve_cmd;
pub mod server;
pub mod sim_plane;
pub mod telemetry;
