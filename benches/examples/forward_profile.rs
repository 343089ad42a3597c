//! Relayed forwarding in memory, once, for a profiler: the criterion benchmark's three nodes
//! (`dep2p_benches::forward::RelayedTrio`: dialer → relay → target, real quinn-proto and TLS,
//! no sockets) move `MIB` MiB after a 4 MiB warm-up, then print each node's busy time.
//!
//! Wall time on a shared virtual machine swings by tens of percent between runs; under
//! `valgrind --tool=callgrind` the instruction counts of the same build are the same every run,
//! so they show what a change moved:
//!
//! ```sh
//! cargo build --release -p dep2p-benches --example forward_profile
//! valgrind --tool=callgrind target/release/examples/forward_profile 16
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | head -60
//! ```

use std::time::Duration;

use dep2p_benches::forward::{A, B, R, RelayedTrio};

/// MiB moved when no argument is given.
const DEFAULT_MIB: u64 = 16;
/// Most MiB one run may move: keeps a mistyped argument from running for hours.
const MAX_MIB: u64 = 4096;

fn main() {
    let mib = match std::env::args().nth(1) {
        None => DEFAULT_MIB,
        Some(arg) => match arg.parse::<u64>() {
            Ok(mib) if (1..=MAX_MIB).contains(&mib) => mib,
            _ => {
                eprintln!("usage: forward_profile [MIB]: MIB must be 1 to {MAX_MIB}, got {arg:?}");
                std::process::exit(2);
            }
        },
    };
    let mut trio = RelayedTrio::new(Duration::from_millis(1));
    trio.pump(4 * 1024 * 1024);
    let before = [trio.busy(R), trio.busy(A), trio.busy(B)];
    trio.pump(mib * 1024 * 1024);
    let busy = |node: usize, at: usize| trio.busy(node) - before[at];
    let rate = |spent: Duration| mib as f64 / spent.as_secs_f64().max(f64::MIN_POSITIVE);
    println!(
        "{mib} MiB forwarded: relay {:?} ({:.0} MiB/s), target {:?}, dialer {:?}",
        busy(R, 0),
        rate(busy(R, 0)),
        busy(A, 1),
        busy(B, 2)
    );
}
