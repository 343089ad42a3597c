#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dep2p_fuzz_harness::relay_ops::relay_ops(data));
