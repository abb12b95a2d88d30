//! Metrics of the kernel side's own bounds and filters: the size of each
//! family's ring buffer, the events filters kept in the kernel, and
//! whether the connect filter is in force and how full its tries are.
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use reflex_wire::LossFamily;

/// The kernel-side metrics.
#[derive(Clone)]
pub struct KernelMetrics {
    /// `reflex_ring_buffer_bytes{family}`: size of each family's ring buffer.
    pub ring_bytes: IntGaugeVec,
    /// `reflex_kernel_filtered_total{family}`: events no loaded policy
    /// could match, counted in the kernel instead of sent.
    pub filtered: IntCounterVec,
    /// `reflex_kernel_filter_active{family}`: 1 while the family's kernel
    /// filter is in force, 0 while everything is sent (no filter, or its
    /// maps could not hold the policy set).
    pub filter_active: IntGaugeVec,
    /// `reflex_kernel_filter_entries{map}`: prefixes in the connect
    /// filter's tries (`ipv4`, `ipv6`).
    pub filter_entries: IntGaugeVec,
    /// `reflex_kernel_filter_capacity{map}`: prefixes each trie was made with.
    pub filter_capacity: IntGaugeVec,
    /// `reflex_ring_buffer_flushes_total{family}`: reads on the flush timer
    /// (`ring_buffers.exec_flush`) that found records no wake-up announced.
    pub flushes: IntCounterVec,
}

impl KernelMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let this = Self {
            ring_bytes: IntGaugeVec::new(
                Opts::new(
                    "reflex_ring_buffer_bytes",
                    "Bytes of each event family's kernel ring buffer (ring_buffers in reflex.yaml).",
                ),
                &["family"],
            )
            .expect("valid metric"),
            filtered: IntCounterVec::new(
                Opts::new(
                    "reflex_kernel_filtered_total",
                    "Events kept in the kernel because no loaded policy could match them, by family.",
                ),
                &["family"],
            )
            .expect("valid metric"),
            filter_active: IntGaugeVec::new(
                Opts::new(
                    "reflex_kernel_filter_active",
                    "1 while the family's kernel filter is in force; 0 while every event is sent.",
                ),
                &["family"],
            )
            .expect("valid metric"),
            filter_entries: IntGaugeVec::new(
                Opts::new(
                    "reflex_kernel_filter_entries",
                    "Prefixes in the connect filter's kernel tries, by address family.",
                ),
                &["map"],
            )
            .expect("valid metric"),
            filter_capacity: IntGaugeVec::new(
                Opts::new(
                    "reflex_kernel_filter_capacity",
                    "Prefixes each connect filter trie was made with (connect_filter.max_prefixes at most).",
                ),
                &["map"],
            )
            .expect("valid metric"),
            flushes: IntCounterVec::new(
                Opts::new(
                    "reflex_ring_buffer_flushes_total",
                    "Reads on the flush timer (ring_buffers.exec_flush) that found records no wake-up announced, by family.",
                ),
                &["family"],
            )
            .expect("valid metric"),
        };
        for family in LossFamily::ALL {
            this.filtered.with_label_values(&[family.label()]);
        }
        this.filter_active
            .with_label_values(&[LossFamily::Connect.label()]);
        this.flushes.with_label_values(&[LossFamily::Exec.label()]);
        for collector in [
            Box::new(this.ring_bytes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(this.filtered.clone()),
            Box::new(this.filter_active.clone()),
            Box::new(this.filter_entries.clone()),
            Box::new(this.filter_capacity.clone()),
            Box::new(this.flushes.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        this
    }
}
