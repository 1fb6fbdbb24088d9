//! Child processes for tests: output captured to a log file, the whole process group killed on drop, and a
//! watchdog that kills it when the test process dies (a panic that aborts, a killed `cargo test`), so no test
//! leaves processes behind. They live in `test_support::process`, shared with the guard's own tests.

pub use test_support::process::*;
