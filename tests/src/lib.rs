//! Helpers shared by the root integration tests.
