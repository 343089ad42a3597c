//! `dep2p bench`.

/// Runs the benchmark.
pub async fn run(_bytes: u64) -> Result<(), String> {
    Err("not yet".into())
}
