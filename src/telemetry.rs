//! Logging: tracing with an `RUST_LOG`-style filter; human format on a terminal, JSON when asked
//! or when standard error is not a terminal. Logs go to standard error (standard output carries
//! command results such as `export --json`). Nothing here may log PII: callers log ids,
//! provinces, sequences and codes only.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Human,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

// ---- metrics (Prometheus, served by `crate::http`) ----
//
// Names and labels: province codes, states, kinds and verdicts only — never a filing's content.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const BUREAU_SECONDS: &str = "beian_bureau_request_seconds";
pub const LIMITER_WAIT_SECONDS: &str = "beian_bureau_limiter_wait_seconds";

/// Installs the process-wide Prometheus recorder; `None` when one is installed already (tests
/// that run the daemon in-process more than once).
pub fn install_metrics() -> Option<PrometheusHandle> {
    builder()?.install_recorder().ok()
}

/// The exporter with the histograms' buckets.
fn builder() -> Option<PrometheusBuilder> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(BUREAU_SECONDS.to_owned()),
            &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
        )
        .ok()?
        .set_buckets_for_metric(
            Matcher::Full(LIMITER_WAIT_SECONDS.to_owned()),
            &[0.001, 0.01, 0.1, 0.5, 1.0, 2.0, 3.0, 6.0, 10.0, 30.0, 60.0],
        )
        .ok()
}

pub fn count_error(province: &str, kind: &'static str) {
    metrics::counter!("beian_errors_total", "province" => province.to_owned(), "kind" => kind)
        .increment(1);
}

pub fn count_submissions(province: &str, how: &'static str, filings: usize) {
    metrics::counter!("beian_submissions_total", "province" => province.to_owned(), "kind" => how)
        .increment(filings as u64);
}

pub fn count_result(province: &str, verdict: &'static str) {
    metrics::counter!("beian_results_total", "province" => province.to_owned(), "kind" => verdict)
        .increment(1);
}

pub fn bureau_latency(province: &str, call: &'static str, took: std::time::Duration) {
    metrics::histogram!(BUREAU_SECONDS, "province" => province.to_owned(), "call" => call)
        .record(took.as_secs_f64());
}

/// How long one request to a bureau waited for its rate and concurrency limiter (every request,
/// also those that did not wait: the count is the number of requests sent).
pub fn limiter_wait(province: &str, waited: std::time::Duration) {
    metrics::histogram!(LIMITER_WAIT_SECONDS, "province" => province.to_owned())
        .record(waited.as_secs_f64());
}

/// Circuit state of a bureau: 1 paused (open), 0 working (closed).
pub fn set_circuit(province: &str, paused: bool) {
    metrics::gauge!("beian_bureau_paused", "province" => province.to_owned()).set(if paused {
        1.0
    } else {
        0.0
    });
}

pub fn set_filings(state: &str, province: &str, n: i64) {
    metrics::gauge!("beian_filings", "state" => state.to_owned(), "province" => province.to_owned())
        .set(n as f64);
}

pub fn set_deadline_risk(province: &str, at_risk: usize, overdue: usize) {
    metrics::gauge!("beian_deadline_at_risk", "province" => province.to_owned())
        .set(at_risk as f64);
    metrics::gauge!("beian_deadline_overdue", "province" => province.to_owned())
        .set(overdue as f64);
}

pub fn set_calendar_coverage(days: i64) {
    metrics::gauge!("beian_calendar_coverage_days").set(days as f64);
}

pub fn count_job(job: &'static str, outcome: &'static str) {
    metrics::counter!("beian_scheduler_runs_total", "job" => job, "outcome" => outcome)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn limiter_waits_are_a_histogram_per_province() {
        let recorder = super::builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            super::limiter_wait("440000", Duration::from_millis(2500));
            super::limiter_wait("440000", Duration::ZERO);
        });
        let text = handle.render();
        assert!(
            text.contains(
                r#"beian_bureau_limiter_wait_seconds_bucket{province="440000",le="3"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"beian_bureau_limiter_wait_seconds_count{province="440000"} 2"#),
            "{text}"
        );
    }
}
