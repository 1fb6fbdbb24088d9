//! Filtered lists: the answers to `tools/list`, `prompts/list`, `resources/list` and `resources/templates/list`
//! show a caller only what the access rules let it call. Pure: the calls a request carries and the caller in,
//! rewritten answers out; [`EventFilter`] reads an event stream in pieces.
//!
//! An answer is matched to its list call by the JSON-RPC `id` the guard read in the request body (numbers by
//! value, so that a server that echoes `1.0` as `1` still matches); a list call whose id the guard is not sure
//! of matches every answer. Filtering an answer that was not a list changes nothing: only `result.tools` (and
//! `prompts`, `resources`, `resourceTemplates`) is touched, `nextCursor` never. Whatever the guard cannot read
//! (JSON `serde_json` refuses, such as `NaN`, which Python's parser takes) is refused, never passed unfiltered.

use std::sync::Arc;

use mcp_guard_config::Allowlist;
use mcp_guard_config::auth::Identity;
use serde_json::Value;

use super::peek::Peeked;

/// The most bytes of a list answer (a JSON body, or one event of a stream) the guard holds to filter it.
pub const LIST_LIMIT: usize = 4 * 1024 * 1024;

/// A list the access rules filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum List {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl List {
    fn of(method: &str) -> Option<List> {
        match method {
            "tools/list" => Some(List::Tools),
            "prompts/list" => Some(List::Prompts),
            "resources/list" => Some(List::Resources),
            "resources/templates/list" => Some(List::Templates),
            _ => None,
        }
    }

    /// The result's array, the call an entry is judged as, and the entry's field that names it. A resource
    /// template is shown when a rule lets the caller read its `uriTemplate` as written (`file:///docs/*` matches
    /// `file:///docs/{path}`); each URI read from it is judged on its own.
    fn parts(self) -> (&'static str, &'static str, &'static str) {
        match self {
            List::Tools => ("tools", "tools/call", "name"),
            List::Prompts => ("prompts", "prompts/get", "name"),
            List::Resources => ("resources", "resources/read", "uri"),
            List::Templates => ("resourceTemplates", "resources/read", "uriTemplate"),
        }
    }
}

/// What filters the answers to one request: its list calls, and who asked.
#[derive(Clone, Debug)]
pub struct ListFilter {
    /// Each list call and the id of its answer (`None`: not sure, any answer).
    calls: Vec<(List, Option<Value>)>,
    allowlist: Arc<Allowlist>,
    identity: Option<Identity>,
}

/// Whether an answer's id is the one a request carried: strings exactly, numbers by value.
fn same_id(asked: &Value, answered: &Value) -> bool {
    match (asked.as_f64(), answered.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => asked == answered,
    }
}

impl ListFilter {
    /// The filter of a request whose body (as the guard read it) carries list calls; `None` when it carries
    /// none, or when no access rules apply.
    pub fn new(body: &Peeked, allowlist: Arc<Allowlist>, identity: Option<Identity>) -> Option<ListFilter> {
        allowlist.access.as_ref()?;
        let calls: Vec<(List, Option<Value>)> = body
            .messages
            .iter()
            .filter_map(|m| Some((List::of(m.method.as_deref()?)?, m.sure_id().cloned())))
            .collect();
        (!calls.is_empty()).then_some(ListFilter {
            calls,
            allowlist,
            identity,
        })
    }

    /// Filters a JSON-RPC message, or a batch of them, in place.
    pub fn filter(&self, message: &mut Value) {
        match message {
            Value::Array(batch) => batch.iter_mut().for_each(|m| self.filter_one(m)),
            m => self.filter_one(m),
        }
    }

    fn filter_one(&self, message: &mut Value) {
        let Some(access) = &self.allowlist.access else {
            return;
        };
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
            return;
        };
        for (list, asked) in &self.calls {
            if asked.as_ref().is_some_and(|a| !same_id(a, &id)) {
                continue;
            }
            let (key, method, field) = list.parts();
            if let Some(entries) = result.get_mut(key).and_then(Value::as_array_mut) {
                // An entry without a readable name is not shown: the guard cannot tell whether it may be called.
                entries.retain(|e| {
                    e.get(field)
                        .and_then(Value::as_str)
                        .is_some_and(|name| access.allows(self.identity.as_ref(), method, name))
                });
            }
        }
    }

    /// A JSON answer, filtered and written again; an error says why it cannot be.
    pub fn json(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let mut v: Value = serde_json::from_slice(body)
            .map_err(|e| format!("a list answer that is not JSON the guard reads: {e}"))?;
        self.filter(&mut v);
        serde_json::to_vec(&v).map_err(|e| e.to_string())
    }
}

/// An event stream (`text/event-stream`) read in pieces: each event whose data is a JSON-RPC answer to a list
/// call is filtered, and every event is written again from the lines the guard read (lines end in `\n`, a
/// leading byte-order mark is dropped), so the client's parser sees the events the guard saw.
#[derive(Debug)]
pub struct EventFilter {
    lists: ListFilter,
    /// The line being read.
    line: Vec<u8>,
    /// The lines of the event being read, and their bytes.
    event: Vec<Vec<u8>>,
    held: usize,
    /// The last byte was a CR: a LF right after it ends no other line.
    after_cr: bool,
    /// The first line has ended (a byte-order mark is only dropped from it).
    started: bool,
}

impl EventFilter {
    pub fn new(lists: ListFilter) -> Self {
        EventFilter {
            lists,
            line: Vec::new(),
            event: Vec::new(),
            held: 0,
            after_cr: false,
            started: false,
        }
    }

    /// Reads the next piece; appends what is ready to send to `out`. An error: an event over [`LIST_LIMIT`], or
    /// one the guard cannot read that may be a list answer.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        for &c in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, c == b'\r');
            match c {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => self.line_end(out)?,
                _ => {
                    self.line.push(c);
                    self.held += 1;
                    if self.held > LIST_LIMIT {
                        return Err(format!(
                            "an event of a list answer over the guard's bound of {LIST_LIMIT} bytes"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The stream ended: an event not ended by an empty line is dropped, as the client's parser drops it.
    pub fn finish(&mut self) {
        self.event.clear();
        self.line.clear();
    }

    fn line_end(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let mut line = std::mem::take(&mut self.line);
        if !self.started {
            self.started = true;
            if line.starts_with(b"\xef\xbb\xbf") {
                line.drain(..3);
            }
        }
        if !line.is_empty() {
            self.event.push(line);
            return Ok(());
        }
        let event = std::mem::take(&mut self.event);
        self.held = 0;
        self.dispatch(event, out)
    }

    /// Writes one event, its data filtered when it is JSON.
    fn dispatch(&self, event: Vec<Vec<u8>>, out: &mut Vec<u8>) -> Result<(), String> {
        let data_of = |line: &[u8]| -> Option<Vec<u8>> {
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, &[][..]),
            };
            (name == b"data").then(|| value.strip_prefix(b" ").unwrap_or(value).to_vec())
        };
        let data: Vec<Vec<u8>> = event.iter().filter_map(|l| data_of(l)).collect();
        let joined = data.join(&b'\n');
        let filtered = match joined.trim_ascii().is_empty() {
            // No data (a comment, a priming event with an id only): nothing a client reads as a message.
            true => None,
            false => {
                let mut v: Value = serde_json::from_slice(&joined).map_err(|e| {
                    format!("an event of a list answer that is not JSON the guard reads: {e}")
                })?;
                self.lists.filter(&mut v);
                Some(serde_json::to_vec(&v).map_err(|e| e.to_string())?)
            }
        };
        let mut wrote_data = false;
        for line in &event {
            match (&filtered, data_of(line)) {
                (Some(_), Some(_)) if wrote_data => {}
                (Some(json), Some(_)) => {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(json);
                    out.push(b'\n');
                    wrote_data = true;
                }
                _ => {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
            }
        }
        out.push(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests;
