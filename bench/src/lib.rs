//! The benchmark suite of issue #9: real server *processes* driven over loopback, each figure a
//! ratio against its floor measured side by side in the same run.
//!
//! - [`load`]: the load generators (gRPC Check v3/v2 over h2c, HTTP/1.1), closed and open loop,
//!   latencies in an HDR histogram, every answer checked; the `loadgen` binary wraps them and prints
//!   one JSON line ([`report::RunReport`]) per run.
//! - [`floor`]: the floor — a bare tonic Check handler answering a constant OK (v3 and v2), and a
//!   static HTTP backend; the `floor` binary.
//! - [`runner`]: starts the real binaries, nginx and the floors pinned to one CPU, runs every scenario
//!   in interleaved rounds and writes `BENCHMARKS.md` and `docs/bench/latency.svg`; the `bench` binary.

pub mod check_request;
pub mod floor;
pub mod load;
pub mod report;
pub mod runner;
