//! Reading a JSON-RPC request's `method` and `params.name` from a prefix of its body, without parsing (or
//! having) the rest: the guard peeks at most [`PEEK_LIMIT`] bytes and passes every byte on unchanged.
//!
//! The scanner walks the top-level object and the `params` object and skips every other value (strings with
//! their escapes, nested objects and arrays); a value cut off by the end of the prefix just ends the scan. A
//! key that occurs twice counts as unreadable, since parsers disagree on which one wins.

/// The most bytes of a request body the guard holds back to read its method.
pub const PEEK_LIMIT: usize = 8 * 1024;

/// What the prefix tells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peeked {
    pub method: Option<String>,
    pub name: Option<String>,
    /// The top-level value ended within the prefix: nothing more is to be learned.
    pub complete: bool,
}

impl Peeked {
    /// Whether reading further could still tell something the limits need.
    pub fn wants_more(&self) -> bool {
        !self.complete
            && (self.method.is_none()
                || (self.method.as_deref() == Some("tools/call") && self.name.is_none()))
    }
}

/// Scans a body prefix.
pub fn scan(prefix: &[u8]) -> Peeked {
    let mut s = Scanner { b: prefix, i: 0 };
    let mut out = Peeked::default();
    let _ = s.top(&mut out);
    out
}

/// `None`: the prefix ended or the JSON is not what a request looks like; scanning stops.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

/// A key seen twice makes its value unreadable.
fn set_once(slot: &mut Option<String>, seen: &mut bool, value: Option<String>) {
    if *seen {
        *slot = None;
    } else {
        *slot = value;
        *seen = true;
    }
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn top(&mut self, out: &mut Peeked) -> Option<()> {
        let (mut method_seen, mut params_seen) = (false, false);
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            out.complete = true;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            match key.as_str() {
                "method" => {
                    let v = if self.peek()? == b'"' {
                        Some(self.string()?)
                    } else {
                        self.skip().map(|_| None)?
                    };
                    set_once(&mut out.method, &mut method_seen, v);
                }
                "params" if self.peek()? == b'{' => {
                    if params_seen {
                        out.name = None;
                        self.skip()?;
                    } else {
                        params_seen = true;
                        self.params(out)?;
                    }
                }
                _ => self.skip()?,
            }
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    out.complete = true;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn params(&mut self, out: &mut Peeked) -> Option<()> {
        let mut name_seen = false;
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            if key == "name" {
                let v = if self.peek()? == b'"' {
                    Some(self.string()?)
                } else {
                    self.skip().map(|_| None)?
                };
                set_once(&mut out.name, &mut name_seen, v);
            } else {
                self.skip()?;
            }
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A JSON string, unescaped.
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut raw = Vec::new();
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    raw.push(c);
                    raw.push(*self.b.get(self.i)?);
                    self.i += 1;
                }
                c if c < 0x20 => return None,
                c => raw.push(c),
            }
        }
        // The escapes (`\u00xx`, surrogate pairs) decoded as a JSON parser decodes them.
        raw.insert(0, b'"');
        raw.push(b'"');
        serde_json::from_slice(&raw).ok()
    }

    /// Skips one value of any kind.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *self.b.get(self.i)? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                // A number or literal: up to the next delimiter, which must be within the prefix.
                let start = self.i;
                while let Some(c) = self.b.get(self.i) {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        return (self.i > start).then_some(());
                    }
                    self.i += 1;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, tool, complete)
    type Found = (Option<String>, Option<String>, bool);

    fn found(body: &str) -> Found {
        let p = scan(body.as_bytes());
        (p.method, p.name, p.complete)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn finds_method_and_tool_wherever_the_sdks_put_them() {
        let cases: &[(&str, Found)] = &[
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"render","arguments":{"a":[1,{"b":"}"}]}}}"#,
                (s("tools/call"), s("render"), true),
            ),
            (
                r#"{"method":"tools/call","params":{"_meta":{"progressToken":7},"arguments":{"name":"not me"},"name":"search"},"jsonrpc":"2.0","id":"x"}"#,
                (s("tools/call"), s("search"), true),
            ),
            (r#" { "id" : 1 , "method" : "ping" } "#, (s("ping"), None, true)),
            (
                r#"{"method":"tools\/call","params":{"name":"r\u00e9sum\u00e9"}}"#,
                (s("tools/call"), s("résumé"), true),
            ),
            (
                r#"{"method":"notifications/initialized"}"#,
                (s("notifications/initialized"), None, true),
            ),
            (r#"{"result":{},"id":1,"jsonrpc":"2.0"}"#, (None, None, true)),
            (r#"{}"#, (None, None, true)),
            // Cut off: what was read before the cut counts.
            (
                r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"ren"#,
                (s("tools/call"), None, false),
            ),
            (r#"{"id":1,"params":{"arguments":{"x":"#, (None, None, false)),
            (r#"{"id":12"#, (None, None, false)),
            // Not a request object.
            (r#"[{"method":"ping"}]"#, (None, None, false)),
            ("not json", (None, None, false)),
            (r#"{"method":7}"#, (None, None, true)),
            // Twice: parsers disagree on which wins, so neither is believed.
            (r#"{"method":"ping","method":"tools/call"}"#, (None, None, true)),
            (
                r#"{"method":"tools/call","params":{"name":"a","name":"b"}}"#,
                (s("tools/call"), None, true),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(&found(body), want, "{body}");
        }
    }

    #[test]
    fn wants_more_until_the_limits_have_what_they_need() {
        assert!(scan(br#"{"id":1,"#).wants_more());
        assert!(!scan(br#"{"method":"ping","#).wants_more());
        assert!(scan(br#"{"method":"tools/call","#).wants_more());
        assert!(!scan(br#"{"method":"tools/call","params":{"name":"x""#).wants_more());
        assert!(!scan(br#"{"id":1}"#).wants_more(), "complete");
    }

    #[test]
    fn agrees_with_serde_on_whole_bodies_and_any_prefix_of_them() {
        let bodies = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"render","arguments":{"q":"a \"quoted\" } ] value","n":[1,2.5e3,true,null]}}}"#,
            r#"{"params":{"arguments":{},"name":"x"},"method":"tools/call","id":"é"}"#,
        ];
        for body in bodies {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let whole = scan(body.as_bytes());
            assert_eq!(whole.method.as_deref(), v["method"].as_str(), "{body}");
            assert_eq!(whole.name.as_deref(), v["params"]["name"].as_str(), "{body}");
            for cut in 0..body.len() {
                let part = scan(&body.as_bytes()[..cut]);
                // A prefix never tells something the whole body does not.
                assert!(part.method.is_none() || part.method == whole.method, "{cut}");
                assert!(part.name.is_none() || part.name == whole.name, "{cut}");
                assert!(!part.complete, "{cut}");
            }
        }
    }
}
