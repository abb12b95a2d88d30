//! Empty library target: it lets the agent name this crate as a build
//! dependency, so cargo rebuilds the agent when the probes change.
#![no_std]
