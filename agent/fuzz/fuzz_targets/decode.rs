//! Any bytes as a ring buffer record: decoded to an event or a typed error,
//! never a panic. A decoded event is also rendered as the agent would log it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = reflex::events::decode::decode(data) {
        let _ = format!("{event:?}");
    }
});
