//! Counters and latency histograms, rendered in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS_SECS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 14],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS_SECS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in LATENCY_BUCKETS_SECS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The frontend's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// PUT requests answered, by outcome.
    pub puts_ok: Counter,
    /// PUT requests refused or failed.
    pub puts_failed: Counter,
    /// GET requests answered with the block.
    pub gets_ok: Counter,
    /// GET requests for unknown blocks.
    pub gets_not_found: Counter,
    /// GET requests that failed.
    pub gets_failed: Counter,
    /// HEAD and DELETE requests.
    pub other_requests: Counter,
    /// Block bytes received by puts.
    pub put_bytes: Counter,
    /// Block bytes sent by gets.
    pub get_bytes: Counter,
    /// Puts whose block was already stored.
    pub dedup_hits: Counter,
    /// Gets that needed a degraded read.
    pub degraded_reads: Counter,
    /// Gets whose bytes were handed on as they arrived (cellar_volume_api::streamed).
    pub streamed_gets: Counter,
    /// Of those, gets cut after bytes were sent (no holder left, or the bytes failed the
    /// check): the client saw a body shorter than announced.
    pub streamed_gets_cut: Counter,
    /// Of those, gets whose client went away before the end (dropped, neither ok nor
    /// failed).
    pub streamed_gets_abandoned: Counter,
    /// Write leases renewed.
    pub lease_renewals: Counter,
    /// Volumes sealed by this frontend (full, or after a replica failure).
    pub volumes_sealed: Counter,
    /// Puts retried on a new volume after a replica failure.
    pub put_retries: Counter,
    /// Replica appends that got no answer within the append deadline.
    pub append_timeouts: Counter,
    /// Batches of puts written (one append per replica and one index commit each).
    pub put_batches: Counter,
    /// Puts in those batches.
    pub put_batch_records: Counter,
    /// Puts that found every put permit, or the put byte budget, taken and waited.
    pub put_admission_waits: Counter,
    /// Gets that found the get byte budget taken and waited.
    pub get_admission_waits: Counter,
    /// Puts whose body did not arrive in time (answered 408, permit freed).
    pub put_body_timeouts: Counter,
    /// S3 GetObjects whose block was read while the version was asked for, and used (the
    /// version named that block).
    pub s3_read_ahead_used: Counter,
    /// ... and not used (the version named another block, or the get failed).
    pub s3_read_ahead_discarded: Counter,
    /// Read-aheads used whose block was handed on as it arrived (of `s3_read_ahead_used`).
    pub s3_read_ahead_streamed: Counter,
    /// Connections closed because a write to the client stayed blocked for the response
    /// write stall timeout (see [`crate::stall`]).
    pub connections_write_stalled: Counter,
    /// gRPC put bodies decoded (each only after its put was admitted).
    pub grpc_put_bodies_decoded: Counter,
    /// Put latency.
    pub put_latency: Histogram,
    /// Get latency.
    pub get_latency: Histogram,
    /// Index lookups that went to the master (puts and gets).
    pub lookup_latency: Histogram,
    /// Appends of a batch to all its replicas.
    pub put_append_latency: Histogram,
    /// Index commits of a batch.
    pub put_commit_latency: Histogram,
}

impl Metrics {
    /// The Prometheus text form.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &str, &Counter); 27] = [
            (
                "cellar_frontend_requests_total",
                "method=\"PUT\",outcome=\"ok\"",
                "Requests answered.",
                &self.puts_ok,
            ),
            ("cellar_frontend_requests_total", "method=\"PUT\",outcome=\"error\"", "", &self.puts_failed),
            ("cellar_frontend_requests_total", "method=\"GET\",outcome=\"ok\"", "", &self.gets_ok),
            (
                "cellar_frontend_requests_total",
                "method=\"GET\",outcome=\"not_found\"",
                "",
                &self.gets_not_found,
            ),
            ("cellar_frontend_requests_total", "method=\"GET\",outcome=\"error\"", "", &self.gets_failed),
            ("cellar_frontend_requests_total", "method=\"other\",outcome=\"any\"", "", &self.other_requests),
            (
                "cellar_frontend_bytes_total",
                "direction=\"in\"",
                "Block bytes received and sent.",
                &self.put_bytes,
            ),
            ("cellar_frontend_bytes_total", "direction=\"out\"", "", &self.get_bytes),
            ("cellar_frontend_dedup_hits_total", "", "Puts of blocks already stored.", &self.dedup_hits),
            ("cellar_frontend_degraded_reads_total", "", "Gets served by decoding.", &self.degraded_reads),
            (
                "cellar_frontend_streamed_gets_total",
                "outcome=\"started\"",
                "Gets handed on as their bytes arrived.",
                &self.streamed_gets,
            ),
            ("cellar_frontend_streamed_gets_total", "outcome=\"cut\"", "", &self.streamed_gets_cut),
            (
                "cellar_frontend_streamed_gets_total",
                "outcome=\"abandoned\"",
                "",
                &self.streamed_gets_abandoned,
            ),
            ("cellar_frontend_lease_renewals_total", "", "Write leases renewed.", &self.lease_renewals),
            (
                "cellar_frontend_volumes_sealed_total",
                "",
                "Volumes sealed by this frontend.",
                &self.volumes_sealed,
            ),
            (
                "cellar_frontend_put_retries_total",
                "",
                "Puts retried after a replica failure.",
                &self.put_retries,
            ),
            (
                "cellar_frontend_append_timeouts_total",
                "",
                "Replica appends with no answer within the append deadline (the volume was sealed).",
                &self.append_timeouts,
            ),
            (
                "cellar_frontend_put_batches_total",
                "",
                "Batches of puts written (one append per replica, one index commit).",
                &self.put_batches,
            ),
            (
                "cellar_frontend_put_batch_records_total",
                "",
                "Puts in those batches.",
                &self.put_batch_records,
            ),
            (
                "cellar_frontend_put_admission_waits_total",
                "",
                "Puts that waited for a put permit or for room in the put byte budget.",
                &self.put_admission_waits,
            ),
            (
                "cellar_frontend_get_admission_waits_total",
                "",
                "Gets that waited for room in the get byte budget.",
                &self.get_admission_waits,
            ),
            (
                "cellar_frontend_put_body_timeouts_total",
                "",
                "Puts whose body did not arrive in time (408).",
                &self.put_body_timeouts,
            ),
            (
                "cellar_frontend_s3_read_ahead_total",
                "outcome=\"used\"",
                "S3 GetObjects of a one-block object whose block was read while its version was asked for.",
                &self.s3_read_ahead_used,
            ),
            (
                "cellar_frontend_s3_read_ahead_total",
                "outcome=\"discarded\"",
                "",
                &self.s3_read_ahead_discarded,
            ),
            (
                "cellar_frontend_s3_read_ahead_streamed_total",
                "",
                "Read-aheads used whose block was handed on as it arrived (of outcome=\"used\").",
                &self.s3_read_ahead_streamed,
            ),
            (
                "cellar_frontend_connections_write_stalled_total",
                "",
                "Connections closed because the client read nothing for the response write stall timeout.",
                &self.connections_write_stalled,
            ),
            (
                "cellar_frontend_grpc_put_bodies_decoded_total",
                "",
                "gRPC put bodies decoded (after admission).",
                &self.grpc_put_bodies_decoded,
            ),
        ];
        for (name, labels, help, c) in counters {
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            }
            let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
            let _ = writeln!(out, "{name}{braces} {}", c.get());
        }
        let _ = writeln!(out, "# HELP cellar_frontend_request_seconds Request latency.");
        let _ = writeln!(out, "# TYPE cellar_frontend_request_seconds histogram");
        self.put_latency.render(&mut out, "cellar_frontend_request_seconds", "method=\"PUT\"");
        self.get_latency.render(&mut out, "cellar_frontend_request_seconds", "method=\"GET\"");
        let _ = writeln!(out, "# HELP cellar_frontend_stage_seconds Latency of the steps of puts and gets.");
        let _ = writeln!(out, "# TYPE cellar_frontend_stage_seconds histogram");
        self.lookup_latency.render(&mut out, "cellar_frontend_stage_seconds", "stage=\"lookup\"");
        self.put_append_latency.render(&mut out, "cellar_frontend_stage_seconds", "stage=\"append\"");
        self.put_commit_latency.render(&mut out, "cellar_frontend_stage_seconds", "stage=\"commit\"");
        out
    }
}
