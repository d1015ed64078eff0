//! The inbound side's ClientHello reader on arbitrary first bytes: it must never panic,
//! a server name it finds lies within the input, and once a prefix is decided (not
//! TLS, or a complete hello) more bytes do not change the decision.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proxy::tls::hello::{parse, Hello};

fuzz_target!(|data: &[u8]| {
    let full = parse(data);
    if let Hello::ClientHello(Some(name)) = full {
        let range = data.as_ptr_range();
        assert!(range.contains(&name.as_ptr()), "the name is borrowed from the input");
    }
    for n in 0..data.len() {
        let d = parse(&data[..n]);
        if d != Hello::NeedMore {
            assert_eq!(d, full, "a prefix of {n} bytes decided {d:?}, the whole {full:?}");
        }
    }
});
