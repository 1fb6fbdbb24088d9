//! Reading the JSON-RPC calls of a request body as the server's JSON parser will read them, from the bytes that
//! have come so far: the guard peeks at most [`PEEK_LIMIT`] bytes before it charges the rate limits, and passes
//! every byte on unchanged.
//!
//! [`Scanner`] is fed the body in pieces (it keeps its place across them) and follows the top-level value, a
//! batch's elements, each request object and its `params` object; every other value is skipped (strings with
//! their escapes, nested objects and arrays). It reads `method`, `id`, and `params.name` / `params.uri` (what
//! `tools/call`, `prompts/get` and the `resources/` calls name). Keys are compared decoded (`"m\u0065thod"` is
//! `method`), and a key that occurs again replaces the earlier value, as in every common JSON parser (Python's
//! `json`, JavaScript's `JSON.parse`, `serde_json::Value`): the last one wins. A key that is `method`, `params`,
//! `name` or `uri` but for case (Go's `encoding/json` matches struct fields case-insensitively, `ſ` and `K`
//! included) makes the message ambiguous; one that is `id` but for case makes its id unsure.
//!
//! A reading taken before the body ended can still be changed by a later key; [`Watch`] keeps scanning the rest
//! of the body and says when it does, so that the request is cut before the server gets a complete body.

use std::borrow::Cow;

use mcp_guard_config::access::named_by;

/// The most bytes of a request body the guard holds back to read its calls.
pub const PEEK_LIMIT: usize = 8 * 1024;

/// Raw (escaped) key bytes kept: the longest key the scanner looks for, `params`, is at most 6 × 6 bytes escaped.
const MAX_KEY: usize = 64;
/// Raw bytes kept of a method or tool name; a longer one is not read (MCP tool names have at most 128 chars).
const MAX_VALUE: usize = 1024;

/// One JSON-RPC message of the body as far as it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// `method` as a parser reads it: the last `method` key's value; `None` when absent or not a string.
    pub method: Option<String>,
    /// `params.name` likewise (a later `params` replaces the whole object).
    pub name: Option<String>,
    /// `params.uri` likewise.
    pub uri: Option<String>,
    /// `id` when it is a string or a number; `None` when absent or another value.
    pub id: Option<serde_json::Value>,
    /// A key that is `id` but for case: some parser may read another id.
    pub id_unsure: bool,
    /// Some parser may read the message otherwise: a key that is `method`, `params`, `name` or `uri` but for
    /// case, or a method, name or uri the guard could not decode.
    pub ambiguous: bool,
    /// The object ended: no later key can change it.
    pub ended: bool,
}

impl Message {
    /// What the call names, in the params field its method names it by ([`named_by`]): the tool of a
    /// `tools/call`, the prompt of a `prompts/get`, the resource of a `resources/read`; `None` for other methods
    /// and when it was not read.
    pub fn target(&self) -> Option<&str> {
        match named_by(self.method.as_deref()?)? {
            "uri" => self.uri.as_deref(),
            _ => self.name.as_deref(),
        }
    }

    /// The id its answer carries, when the guard is sure of it (see [`Message::id`]).
    pub fn sure_id(&self) -> Option<&serde_json::Value> {
        self.id.as_ref().filter(|_| !self.id_unsure)
    }
}

/// What the bytes so far tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peeked {
    /// The request object, or a batch's object elements in order.
    pub messages: Vec<Message>,
    /// The top-level value is an array: a JSON-RPC batch.
    pub batch: bool,
    /// The top-level value ended: nothing more is to be learned (anything after it makes the body invalid).
    pub complete: bool,
    /// Not JSON the scanner can follow: not an object or array (another encoding, say), or a syntax error.
    pub broken: bool,
}

impl Peeked {
    /// Whether reading further could still tell something the limits need.
    pub fn wants_more(&self) -> bool {
        if self.complete || self.broken {
            return false;
        }
        if self.batch {
            return true;
        }
        self.messages.first().is_none_or(|m| {
            !m.ambiguous
                && match m.method.as_deref() {
                    None => true,
                    Some(method) => named_by(method).is_some() && m.target().is_none(),
                }
        })
    }
}

/// Scans a whole body prefix at once.
pub fn scan(prefix: &[u8]) -> Peeked {
    let mut s = Scanner::default();
    s.feed(prefix);
    s.out
}

/// A container the scanner follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Batch,
    Request,
    Params,
}

/// Where within a container the scanner is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// After `{`: a key or `}`; after `[`: a value or `]`.
    Open,
    /// After `,` in an object.
    Key,
    Colon,
    Value,
    /// After a value: `,` or the end.
    Next,
}

/// The keys that decide a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Method,
    Params,
    Name,
    Uri,
    Id,
    Other,
}

#[derive(Clone, Copy, Debug)]
struct Level {
    kind: Kind,
    at: At,
    key: Key,
}

/// The containers open, outermost first: at most a batch, a request and its params, so kept in place.
#[derive(Clone, Copy, Debug, Default)]
struct Levels {
    open: [Option<Level>; 3],
    len: usize,
}

impl Levels {
    fn last(&self) -> Option<Level> {
        self.open[..self.len].last().copied().flatten()
    }

    fn last_mut(&mut self) -> Option<&mut Level> {
        self.open[..self.len].last_mut().and_then(Option::as_mut)
    }

    fn push(&mut self, level: Level) {
        // The scanner opens a request only at the top or in a batch, and params only in a request.
        debug_assert!(self.len < self.open.len());
        if let Some(slot) = self.open.get_mut(self.len) {
            *slot = Some(level);
            self.len += 1;
        }
    }

    fn pop(&mut self) -> Option<Level> {
        self.len = self.len.checked_sub(1)?;
        self.open[self.len].take()
    }
}

/// The string being read: a key, the method, name, uri or id value, or one to skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Key,
    Method,
    Name,
    Uri,
    Id,
    Skip,
}

#[derive(Clone, Debug, Default)]
enum Token {
    #[default]
    Between,
    Str {
        role: Role,
        escaped: bool,
    },
    /// A number or literal, up to the next delimiter; `id` when it is the value of `id` (kept in `raw`).
    Bare {
        id: bool,
    },
}

/// A push scanner: feed it the body in pieces.
#[derive(Clone, Debug, Default)]
pub struct Scanner {
    out: Peeked,
    levels: Levels,
    /// Inside a value nobody reads: how many brackets deep.
    skipping: usize,
    token: Token,
    /// The raw bytes of the key or value being read, whether they overflowed their bound, and whether they hold
    /// an escape.
    raw: Vec<u8>,
    overflow: bool,
    escapes: bool,
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// The JSON string `raw` (between its quotes, escapes as written) decoded, as a JSON parser decodes it.
fn decode(raw: &[u8], escapes: bool) -> Option<Cow<'_, str>> {
    // Without an escape the text is the bytes themselves (a control character never gets here): parsing it as
    // JSON is the UTF-8 check alone.
    if !escapes {
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).ok().map(Cow::Owned)
}

/// Unicode simple case folding as far as a case-insensitive key match needs it (`ſ` → `s`, `K` → `k`).
pub(crate) fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

/// Which deciding key `key` (decoded, or raw when it has no escape) is in a container of `kind`: exactly it, or it
/// but for case (ambiguous: `None`). A key that is not UTF-8 is none of them.
fn key_of(kind: Kind, key: &[u8]) -> Option<Key> {
    let targets: &[(&str, Key)] = match kind {
        Kind::Request => &[("method", Key::Method), ("params", Key::Params), ("id", Key::Id)],
        Kind::Params => &[("name", Key::Name), ("uri", Key::Uri)],
        Kind::Batch => &[],
    };
    // An ASCII key folds as ASCII; another through the Unicode folding (`ſ`, the Kelvin sign), once.
    let folded = match key.is_ascii() {
        true => None,
        false => match std::str::from_utf8(key) {
            Ok(key) => Some(fold(key)),
            Err(_) => return Some(Key::Other),
        },
    };
    for (name, k) in targets {
        if key == name.as_bytes() {
            return Some(*k);
        }
        let same_but_case = match &folded {
            None => key.eq_ignore_ascii_case(name.as_bytes()),
            Some(folded) => folded == name,
        };
        if same_but_case {
            return None;
        }
    }
    Some(Key::Other)
}

impl Scanner {
    /// What the bytes fed so far tell.
    pub fn peeked(&self) -> &Peeked {
        &self.out
    }

    /// Reads the next piece of the body.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&c, rest)) = bytes.split_first() {
            if self.out.complete || self.out.broken {
                return;
            }
            match self.run(bytes) {
                0 => {
                    self.byte(c);
                    bytes = rest;
                }
                n => bytes = &bytes[n..],
            }
        }
    }

    /// [`Scanner::feed`] without its runs: every byte through the state machine (the runs' reference).
    #[cfg(test)]
    fn feed_bytewise(&mut self, bytes: &[u8]) {
        for &c in bytes {
            if self.out.complete || self.out.broken {
                return;
            }
            self.byte(c);
        }
    }

    /// How many bytes from the start of `bytes` the state machine would pass over one by one without changing
    /// state, taken at once: the plain text of a string (kept, if it is read, and its closing quote read with
    /// it), the inside of a value nobody reads up to its next quote or bracket, the rest of a number or literal
    /// nobody reads. 0: the first byte needs [`Scanner::byte`].
    fn run(&mut self, bytes: &[u8]) -> usize {
        let end = |stop: fn(&u8) -> bool| bytes.iter().position(stop).unwrap_or(bytes.len());
        match self.token {
            Token::Str { role, escaped: false } => {
                let n = end(|&c| c == b'"' || c == b'\\' || c < 0x20);
                if role != Role::Skip {
                    self.keep_all(role, &bytes[..n]);
                }
                // The closing quote, when the run ends at one, in the same step.
                if bytes.get(n) == Some(&b'"') {
                    self.string_byte(role, false, b'"');
                    return n + 1;
                }
                n
            }
            Token::Between if self.skipping > 0 => end(|c| matches!(c, b'"' | b'{' | b'[' | b'}' | b']')),
            Token::Bare { id: false } => end(|&c| matches!(c, b',' | b'}' | b']') || is_ws(c)),
            _ => 0,
        }
    }

    fn message(&mut self) -> Option<&mut Message> {
        self.out.messages.last_mut()
    }

    fn broken(&mut self) {
        self.out.broken = true;
    }

    fn byte(&mut self, c: u8) {
        match self.token {
            Token::Str { role, escaped } => return self.string_byte(role, escaped, c),
            Token::Bare { id } if matches!(c, b',' | b'}' | b']') || is_ws(c) => {
                self.token = Token::Between;
                if id {
                    self.read_id(serde_json::from_slice(&self.raw).ok());
                }
                self.value_done();
            }
            Token::Bare { id: true } => return self.keep(Role::Id, c),
            Token::Bare { id: false } => return,
            Token::Between => {}
        }
        if self.skipping > 0 {
            match c {
                b'"' => self.start_string(Role::Skip),
                b'{' | b'[' => self.skipping += 1,
                b'}' | b']' => {
                    self.skipping -= 1;
                    if self.skipping == 0 {
                        self.value_done();
                    }
                }
                _ => {}
            }
            return;
        }
        if is_ws(c) {
            return;
        }
        let Some(level) = self.levels.last() else {
            // The top-level value: a request object or a batch.
            return match c {
                b'{' => self.open_request(),
                b'[' => {
                    self.out.batch = true;
                    self.push(Kind::Batch);
                }
                _ => self.broken(),
            };
        };
        let object = level.kind != Kind::Batch;
        match (level.at, c) {
            (At::Open, b'}') if object => self.close(),
            (At::Open, b']') if !object => self.close(),
            (At::Open | At::Key, b'"') if object => self.start_string(Role::Key),
            (At::Colon, b':') => self.set_at(At::Value),
            (At::Open | At::Value, _) if !object => match c {
                b'{' => self.open_request(),
                _ => self.skip_value(c),
            },
            (At::Value, _) => self.value(level, c),
            (At::Next, b',') => self.set_at(if object { At::Key } else { At::Value }),
            (At::Next, b'}') if object => self.close(),
            (At::Next, b']') if !object => self.close(),
            _ => self.broken(),
        }
    }

    fn set_at(&mut self, at: At) {
        if let Some(level) = self.levels.last_mut() {
            level.at = at;
        }
    }

    fn push(&mut self, kind: Kind) {
        self.levels.push(Level {
            kind,
            at: At::Open,
            key: Key::Other,
        });
    }

    fn open_request(&mut self) {
        self.out.messages.push(Message::default());
        self.push(Kind::Request);
    }

    /// The value of a key in a request or params object.
    fn value(&mut self, level: Level, c: u8) {
        match (level.key, c) {
            (Key::Method, b'"') => self.start_string(Role::Method),
            (Key::Name, b'"') => self.start_string(Role::Name),
            (Key::Uri, b'"') => self.start_string(Role::Uri),
            (Key::Id, b'"') => self.start_string(Role::Id),
            (Key::Id, b'-' | b'0'..=b'9') => {
                self.start_string(Role::Id);
                self.token = Token::Bare { id: true };
                self.keep(Role::Id, c);
            }
            (Key::Params, b'{') => self.push(Kind::Params),
            _ => self.skip_value(c),
        }
    }

    fn skip_value(&mut self, c: u8) {
        match c {
            b'"' => self.start_string(Role::Skip),
            b'{' | b'[' => self.skipping = 1,
            b'}' | b']' | b',' | b':' => self.broken(),
            _ => self.token = Token::Bare { id: false },
        }
    }

    /// Keeps one raw byte of a key or value, up to its bound.
    fn keep(&mut self, role: Role, c: u8) {
        self.keep_all(role, &[c]);
    }

    /// Keeps raw bytes of a key or value, up to its bound.
    fn keep_all(&mut self, role: Role, bytes: &[u8]) {
        let bound = if role == Role::Key { MAX_KEY } else { MAX_VALUE };
        let room = bound.saturating_sub(self.raw.len());
        self.raw.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.overflow |= bytes.len() > room;
    }

    /// The id of the message read (`None`: not one the guard could read).
    fn read_id(&mut self, id: Option<serde_json::Value>) {
        let id = id.filter(|_| !self.overflow);
        if let Some(m) = self.message() {
            m.id = id;
        }
    }

    /// A value ended in the innermost container (or the top-level value ended).
    fn value_done(&mut self) {
        match self.levels.last_mut() {
            Some(level) => level.at = At::Next,
            None => self.out.complete = true,
        }
    }

    fn close(&mut self) {
        if let Some(level) = self.levels.pop()
            && level.kind == Kind::Request
            && let Some(m) = self.message()
        {
            m.ended = true;
        }
        self.value_done();
    }

    fn start_string(&mut self, role: Role) {
        self.token = Token::Str { role, escaped: false };
        self.raw.clear();
        self.overflow = false;
        self.escapes = false;
    }

    fn string_byte(&mut self, role: Role, escaped: bool, c: u8) {
        let end = !escaped && c == b'"';
        if !escaped && c < 0x20 {
            return self.broken();
        }
        if !end {
            let escape = !escaped && c == b'\\';
            self.escapes |= escape;
            self.token = Token::Str {
                role,
                escaped: escape,
            };
            if role != Role::Skip {
                self.keep(role, c);
            }
            return;
        }
        self.token = Token::Between;
        // A skipped string is not kept, and not decoded.
        if role == Role::Skip {
            if self.skipping == 0 {
                self.value_done();
            }
            return;
        }
        let raw = std::mem::take(&mut self.raw);
        if role == Role::Key && !self.overflow && !self.escapes {
            // A key without an escape is its bytes: no decoding.
            self.key(Some(&raw));
        } else {
            let text = (!self.overflow).then(|| decode(&raw, self.escapes)).flatten();
            match role {
                Role::Key => self.key(text.as_deref().map(str::as_bytes)),
                _ => self.string_value(role, text.map(Cow::into_owned)),
            }
        }
        // Its buffer serves the next string.
        self.raw = raw;
    }

    /// A string value read: the method, name, uri or id.
    fn string_value(&mut self, role: Role, text: Option<String>) {
        match role {
            Role::Id => {
                self.read_id(text.map(serde_json::Value::String));
                self.value_done();
            }
            _ => {
                let unreadable = text.is_none();
                if let Some(m) = self.message() {
                    m.ambiguous |= unreadable;
                    match role {
                        Role::Method => m.method = text,
                        Role::Name => m.name = text,
                        _ => m.uri = text,
                    }
                }
                self.value_done();
            }
        }
    }

    /// A key read: the value it names starts over (the last key wins).
    fn key(&mut self, text: Option<&[u8]>) {
        let Some(level) = self.levels.last() else {
            return;
        };
        // A key that cannot be decoded, or is too long to be one of those looked for, is no deciding key.
        let key = text.map_or(Some(Key::Other), |k| key_of(level.kind, k));
        if let Some(m) = self.message() {
            match key {
                Some(Key::Method) => m.method = None,
                Some(Key::Params) => (m.name, m.uri) = (None, None),
                Some(Key::Name) => m.name = None,
                Some(Key::Uri) => m.uri = None,
                Some(Key::Id) => m.id = None,
                Some(Key::Other) => {}
                // `ID` is another key to most parsers and the id to Go's: the answer's id is not sure.
                None if level.kind == Kind::Request
                    && text.is_some_and(|k| std::str::from_utf8(k).is_ok_and(|k| fold(k) == "id")) =>
                {
                    m.id_unsure = true
                }
                None => m.ambiguous = true,
            }
        }
        if let Some(l) = self.levels.last_mut() {
            l.key = key.unwrap_or(Key::Other);
            l.at = At::Colon;
        }
    }
}

/// The rest of a body whose call was charged (and judged) before it ended: it must not name another method,
/// tool, prompt or resource.
#[derive(Clone, Debug)]
pub struct Watch {
    scanner: Scanner,
    method: String,
    target: Option<String>,
}

impl Watch {
    /// Watches a single request charged as `method` (and `target`, what it names, when that was read: see
    /// [`Message::target`]), the scanner having read the prefix.
    pub fn new(scanner: Scanner, method: String, target: Option<String>) -> Self {
        Watch {
            scanner,
            method,
            target,
        }
    }

    /// Reads the next piece; an error says why the body now names another call than the one charged.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.scanner.feed(bytes);
        let p = &self.scanner.out;
        let m = p.messages.first();
        let why = if p.broken {
            "is not JSON the guard can follow"
        } else if m.is_none_or(|m| m.ambiguous) {
            "has a key that parsers read differently"
        } else if m.and_then(|m| m.method.as_deref()) != Some(&self.method) {
            "names another method"
        } else if self.target.is_some() && m.and_then(Message::target) != self.target.as_deref() {
            "names another tool, prompt or resource"
        } else {
            return Ok(());
        };
        Err(format!(
            "the request body {why} after the part of it that the guard read to decide"
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests;
