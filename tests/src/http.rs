//! A deliberately raw HTTP/1.1 client for tests: it sends exactly the bytes it is given, so tests can forge
//! Host and Origin headers, duplicate them or malform them, which real clients refuse to do. The blocking
//! one-shot clients of `test_support::http1`, which reads the response with the tests' one HTTP/1 reader.

pub use test_support::http1::Response;
pub use test_support::http1::blocking::{get, raw, request};
