//! Errors as one line of text, for logs and refusal details.

/// An error and its sources on one line, `a: b: c`; a source whose text the line already holds (an error that
/// prints its source itself) is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}
