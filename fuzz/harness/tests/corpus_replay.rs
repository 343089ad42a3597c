//! Replays every committed fuzz input (`fuzz/corpus/<target>/*`) through the harness its
//! cargo-fuzz target calls, on the stable toolchain: the seeds, and every input that once
//! crashed a target (named `crash-*`), so CI keeps them fixed without nightly.

use std::path::{Path, PathBuf};

use dep2p_fuzz_harness::TARGETS;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

fn files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_committed_corpus() {
    for target in TARGETS {
        assert!(
            !files(target.name).is_empty(),
            "no corpus for {}",
            target.name
        );
    }
}

#[test]
fn no_corpus_folder_without_a_target() {
    for entry in std::fs::read_dir(corpus_dir()).expect("fuzz/corpus") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            dep2p_fuzz_harness::target(&name).is_some(),
            "fuzz/corpus/{name} belongs to no target"
        );
    }
}

macro_rules! replay {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let target = dep2p_fuzz_harness::target(stringify!($name)).expect("target");
            for file in files(target.name) {
                let data = std::fs::read(&file).expect("corpus file");
                eprintln!("{}", file.display());
                (target.run)(&data);
            }
        }
    )*};
}

// One test per target, so a failure names it and the targets replay in parallel.
replay!(
    multistream,
    relay_wire,
    voucher,
    certificate,
    yamux,
    identify,
    node,
    relay_ops,
    scenario,
);
