//! Prometheus metrics of `stasis serve` (text format at `/metrics`).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub app: String,
    /// `success` or `failure`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestoreLabels {
    pub app: String,
    /// `in_place` or `clone`.
    pub mode: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
}

fn freeze_histogram() -> Histogram {
    // 0.25 ms .. ~4 s: freezes are milliseconds; the bound is seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.000_25, 2.0, 15))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub backups: Family<OutcomeLabels, Counter>,
    pub restores: Family<RestoreLabels, Counter>,
    pub freeze_window: Family<AppLabels, Histogram, fn() -> Histogram>,
    pub snapshot_latency: Family<AppLabels, Histogram, fn() -> Histogram>,
    /// Seconds since the last SnapMirror transfer of the app's DR plan finished; set from DR
    /// status when a plan exists.
    pub snapmirror_lag: Family<AppLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub jobs_running: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("stasis");
        let backups = Family::<OutcomeLabels, Counter>::default();
        let restores = Family::<RestoreLabels, Counter>::default();
        let freeze_window = Family::<AppLabels, Histogram, fn() -> Histogram>::new_with_constructor(freeze_histogram as fn() -> Histogram);
        let snapshot_latency = Family::<AppLabels, Histogram, fn() -> Histogram>::new_with_constructor(freeze_histogram as fn() -> Histogram);
        let snapmirror_lag = Family::<AppLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let jobs_running = Gauge::default();
        registry.register("backups", "Backups by app and outcome", backups.clone());
        registry.register("restores", "Restores by app, mode and outcome", restores.clone());
        registry.register("freeze_window_seconds", "How long the application stayed quiesced per backup", freeze_window.clone());
        registry.register("snapshot_latency_seconds", "The snapshot request inside the freeze, from quiesced to the array's answer", snapshot_latency.clone());
        registry.register("snapmirror_lag_seconds", "Seconds since the app's last SnapMirror transfer (DR plans only)", snapmirror_lag.clone());
        registry.register("jobs_running", "Backup and restore jobs running now", jobs_running.clone());
        Metrics { registry: Mutex::new(registry), backups, restores, freeze_window, snapshot_latency, snapmirror_lag, jobs_running }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
