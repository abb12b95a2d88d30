//! Any text as a policy file: parsed, validated and compiled. Every input
//! must give a policy set or errors, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = reflex::policy::check_source(std::path::Path::new("fuzz.yaml"), &text);
});
