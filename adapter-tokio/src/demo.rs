//! `dep2p demo`.

/// Runs the demo.
pub async fn run(_nodes: usize, _bytes: u64) -> Result<(), String> {
    Err("not yet".into())
}
