//! The seed corpus is generated, not hand-made: `seeds::all()` builds real messages,
//! certificates, yamux frames and datagrams captured from a fixed world. This test checks that
//! the generator is deterministic and that every seed it names is committed as
//! `fuzz/corpus/<target>/seed-<name>`; run it with `DEP2P_WRITE_SEEDS=1` to (re)write them
//! after changing the generator or a wire format. Seeds captured from a world (datagrams)
//! change whenever the node's bytes change; a stale committed seed is still a valid fuzz input,
//! so only its presence is required.

use std::path::Path;

#[test]
fn seed_generator_is_deterministic_and_every_seed_is_committed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let write = std::env::var_os("DEP2P_WRITE_SEEDS").is_some();
    let first = dep2p_fuzz_harness::seeds::all();
    let second = dep2p_fuzz_harness::seeds::all();
    assert!(first == second, "the seed generator is not deterministic");
    for (target, name, bytes) in first {
        let path = root.join(target).join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &bytes).expect("write seed");
        } else {
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (run with DEP2P_WRITE_SEEDS=1)", path.display())
            });
            assert!(
                committed == bytes || name.starts_with("captured"),
                "{} differs from the generator (run with DEP2P_WRITE_SEEDS=1)",
                path.display()
            );
        }
    }
}

#[test]
fn seed_layout_matches_unstructured() {
    // The seeds write integers little-endian and bools as one byte; check that this is what
    // `arbitrary::Unstructured` reads back.
    let input = dep2p_fuzz_harness::seeds::Input::default()
        .u8(1)
        .u16(0x1234)
        .u64(0x0102_0304_0506_0708)
        .0;
    let mut u = arbitrary::Unstructured::new(&input);
    assert!(u.arbitrary::<bool>().unwrap());
    assert_eq!(u.arbitrary::<u16>().unwrap(), 0x1234);
    assert_eq!(u.arbitrary::<u64>().unwrap(), 0x0102_0304_0506_0708);
}
