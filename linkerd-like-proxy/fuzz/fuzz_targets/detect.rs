//! Protocol detection on arbitrary first bytes: must never panic, and its answer must
//! be stable as more bytes arrive (a decided prefix stays decided the same way).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proxy::detect::{detect, Detected, DETECT_BUFFER};

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(DETECT_BUFFER)];
    let full = detect(data);
    for n in 1..data.len() {
        let d = detect(&data[..n]);
        if d != Detected::NeedMore {
            // Once the bytes decide, later bytes cannot change the decision.
            assert_eq!(d, full, "prefix of {n} bytes decided {d:?} but the whole decided {full:?}");
        }
    }
});
