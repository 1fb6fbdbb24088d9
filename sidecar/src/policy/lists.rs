//! Filtered lists: the answers to `tools/list`, `prompts/list`, `resources/list` and `resources/templates/list`
//! show a caller only what the access rules let it call. Pure: a JSON-RPC message and the caller in, the message
//! rewritten out; [`EventFilter`] reads an event stream in pieces.
//!
//! A list answer is recognised from the message itself, never from the request it answers: any message whose
//! `result` carries a `tools`, `prompts`, `resources` or `resourceTemplates` member is filtered. Matching answers
//! to the ids of the list calls the guard forwarded would miss what it never saw: a server replays the events of
//! a stream to a client that resumes it (`GET` with `Last-Event-ID`), on another request, maybe another
//! connection. Keys are matched as every client's parser may read them: `result` and the list members also when
//! they are those names but for case (Go's `encoding/json` reads `RESULT` as `result`), and an entry is shown only
//! when it names itself once, exactly, in the field the rules judge. Only those members are touched, `nextCursor`
//! never. Whatever the guard cannot read (JSON `serde_json` refuses, such as `NaN`, which Python's parser takes)
//! is refused, never passed unfiltered.

use std::sync::Arc;

use mcp_guard_config::Allowlist;
use mcp_guard_config::auth::Identity;
use serde_json::Value;

use super::peek::{Peeked, fold};

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
    /// The list a call asks for.
    fn asked_by(method: &str) -> Option<List> {
        match method {
            "tools/list" => Some(List::Tools),
            "prompts/list" => Some(List::Prompts),
            "resources/list" => Some(List::Resources),
            "resources/templates/list" => Some(List::Templates),
            _ => None,
        }
    }

    /// The list a member of a result holds, its key case-folded.
    fn held_in(folded_key: &str) -> Option<List> {
        match folded_key {
            "tools" => Some(List::Tools),
            "prompts" => Some(List::Prompts),
            "resources" => Some(List::Resources),
            "resourcetemplates" => Some(List::Templates),
            _ => None,
        }
    }

    /// The call an entry is judged as, and the entry's field that names it. A resource template is shown when a
    /// rule lets the caller read its `uriTemplate` as written (`file:///docs/*` matches `file:///docs/{path}`);
    /// each URI read from it is judged on its own.
    fn judged_as(self) -> (&'static str, &'static str) {
        match self {
            List::Tools => ("tools/call", "name"),
            List::Prompts => ("prompts/get", "name"),
            List::Resources => ("resources/read", "uri"),
            List::Templates => ("resources/read", "uriTemplate"),
        }
    }
}

/// What filters the answers to one request: the rules, who asked, and whether the request itself asks for a
/// list.
#[derive(Clone, Debug)]
pub struct ListFilter {
    allowlist: Arc<Allowlist>,
    identity: Option<Identity>,
    /// The request body carries a list call: its `application/json` answer is read whole to be filtered. (An
    /// event stream is filtered whatever the request: it may replay answers to other requests.)
    asks_for_list: bool,
}

impl ListFilter {
    /// The filter of the answers to a request whose body the guard read as `body` (`None`: no body); `None`
    /// when no access rules apply.
    pub fn new(allowlist: Arc<Allowlist>, identity: Option<Identity>, body: Option<&Peeked>) -> Option<Self> {
        allowlist.access.as_ref()?;
        let asks_for_list = body.is_some_and(|b| {
            b.messages
                .iter()
                .any(|m| m.method.as_deref().and_then(List::asked_by).is_some())
        });
        Some(ListFilter {
            allowlist,
            identity,
            asks_for_list,
        })
    }

    /// Whether the request asks for a list: its JSON answer is then read whole ([`ListFilter::json`]).
    pub fn asks_for_list(&self) -> bool {
        self.asks_for_list
    }

    /// Filters a JSON-RPC message, or a batch of them, in place.
    pub fn filter(&self, message: &mut Value) {
        match message {
            Value::Array(batch) => batch.iter_mut().for_each(|m| self.filter_one(m)),
            m => self.filter_one(m),
        }
    }

    fn filter_one(&self, message: &mut Value) {
        let Value::Object(message) = message else {
            return;
        };
        let results = message
            .iter_mut()
            .filter(|(key, _)| fold(key) == "result")
            .filter_map(|(_, result)| result.as_object_mut());
        for result in results {
            for (key, entries) in result.iter_mut() {
                let Some(list) = List::held_in(&fold(key)) else {
                    continue;
                };
                match entries {
                    Value::Array(entries) => entries.retain(|e| self.shows(list, e)),
                    // Not a list a client reads as one; emptied all the same, in case one does.
                    other => *other = Value::Array(Vec::new()),
                }
            }
        }
    }

    /// Whether the caller sees an entry of a list: it names itself once, in the exact field, with a name the
    /// rules let the caller call. An entry without a readable name is not shown: the guard cannot tell whether it
    /// may be called.
    fn shows(&self, list: List, entry: &Value) -> bool {
        let Some(access) = &self.allowlist.access else {
            return true;
        };
        let (method, field) = list.judged_as();
        let Some(entry) = entry.as_object() else {
            return false;
        };
        let folded = fold(field);
        let mut names = entry.iter().filter(|(key, _)| fold(key) == folded);
        match (names.next(), names.next()) {
            (Some((key, Value::String(name))), None) if key == field => {
                access.allows(self.identity.as_ref(), method, name)
            }
            _ => false,
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

/// An event stream (`text/event-stream`) read in pieces, every stream a server sends when access rules apply:
/// each event whose data is JSON is filtered as a list answer may be, and every event is written again from the
/// fields and comments the guard read (lines end in `\n`, a leading byte-order mark is dropped, lines that are
/// no field a client reads are dropped), so the client's parser sees the events the guard saw.
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

/// The fields of an event a client's parser reads (the WHATWG `EventSource` parsing rules).
const FIELDS: [&[u8]; 4] = [b"data", b"event", b"id", b"retry"];

/// A line's field name and value (one leading space dropped); a line without `:` is a name with an empty value.
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b':') {
        Some(i) => {
            let value = &line[i + 1..];
            (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[][..]),
    }
}

/// Whether a client may read an event's data as a JSON-RPC message: its type (the last `event` field) is
/// `message`, which it is when not set. Read loosely (case and surrounding space ignored), so that only an event a
/// client surely reads otherwise (the legacy SSE transport's `endpoint`) may carry data that is not JSON.
fn read_as_message(lines: &[Vec<u8>]) -> bool {
    let kind = lines
        .iter()
        .map(|l| field(l))
        .rfind(|(name, _)| *name == b"event")
        .map_or(&[][..], |(_, value)| value.trim_ascii());
    kind.is_empty() || kind.eq_ignore_ascii_case(b"message")
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
                        return Err(format!("an event over the guard's bound of {LIST_LIMIT} bytes"));
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
            // A field no client reads is dropped, since some lax parser might read it after all (` data:`,
            // `DATA:`). Comments stay: servers keep idle streams open with them.
            if line.starts_with(b":") || FIELDS.contains(&field(&line).0) {
                self.event.push(line);
            }
            return Ok(());
        }
        let event = std::mem::take(&mut self.event);
        self.held = 0;
        self.dispatch(event, out)
    }

    /// Writes one event, its data filtered when it is JSON.
    fn dispatch(&self, event: Vec<Vec<u8>>, out: &mut Vec<u8>) -> Result<(), String> {
        let is_data = |line: &[u8]| field(line).0 == b"data";
        let data: Vec<&[u8]> = event.iter().filter(|l| is_data(l)).map(|l| field(l).1).collect();
        let joined = data.join(&b'\n');
        let filtered = match joined.trim_ascii().is_empty() {
            // No data (a priming event with an id only): nothing a client reads as a message.
            true => None,
            false => match serde_json::from_slice::<Value>(&joined) {
                Ok(mut v) => {
                    self.lists.filter(&mut v);
                    Some(serde_json::to_vec(&v).map_err(|e| e.to_string())?)
                }
                Err(_) if !read_as_message(&event) => None,
                Err(e) => return Err(format!("an event that is not JSON the guard reads: {e}")),
            },
        };
        let mut wrote_data = false;
        for line in &event {
            match &filtered {
                Some(_) if is_data(line) && wrote_data => {}
                Some(json) if is_data(line) => {
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
