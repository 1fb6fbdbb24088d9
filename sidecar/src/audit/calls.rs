//! What the audit log reads of each JSON-RPC call in the body prefix the guard holds back ([`crate::body::
//! RequestBody::peek`]): its id, method, name, trace context and the exact bytes of its arguments.
//!
//! serde_json reads the prefix as it would read a whole body, filling in each call as it goes; where the prefix
//! ends (or the JSON breaks) reading stops, and what was read whole is kept. A key that occurs again replaces the
//! earlier value (the last one wins, as in the server's parser and in [`crate::policy::peek`], which this reader
//! is held to by a differential test); a later `params` replaces the whole object.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// One JSON-RPC message of the prefix, as far as the prefix holds it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallFacts<'a> {
    /// `method`, when a string.
    pub method: Option<String>,
    /// `id` as sent; `None` when absent.
    pub id: Option<Value>,
    /// `params.name` (`tools/call`, `prompts/get`), when a string.
    pub params_name: Option<String>,
    /// `params.uri` (`resources/read`), when a string.
    pub params_uri: Option<String>,
    /// `params._meta.traceparent` and `tracestate` (W3C trace context), when strings.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// The bytes of the `params.arguments` value exactly as sent (its first byte to its last), when the value
    /// ended within the prefix.
    pub arguments: Option<&'a [u8]>,
    /// The message object ended within the prefix: nothing after it can change what was read.
    pub ended: bool,
}

impl CallFacts<'_> {
    /// What the call names: the tool or prompt (`params.name`), or the resource (`params.uri` of
    /// `resources/read`).
    pub fn name(&self) -> Option<&str> {
        match self.method.as_deref() {
            Some("resources/read") => self.params_uri.as_deref(),
            _ => self.params_name.as_deref(),
        }
    }
}

/// The messages of a body prefix: the request object, or a batch's object elements in order.
pub fn read(prefix: &[u8]) -> Vec<CallFacts<'_>> {
    let mut calls = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(prefix);
    // An error is where the prefix ends or the JSON breaks: what was read before it stays.
    let _ = Top(&mut calls).deserialize(&mut de);
    calls
}

/// Reads the entries of one JSON object into what it fills.
trait Fill<'de> {
    fn fill<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error>;
}

/// A value whose object form is filled in; any other value is skipped.
struct Lenient<T>(T);

impl<'de, T: Fill<'de>> DeserializeSeed<'de> for Lenient<T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Fill<'de>> Visitor<'de> for Lenient<T> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.fill(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The top-level value: a request object, or a batch of them.
struct Top<'c, 'de>(&'c mut Vec<CallFacts<'de>>);

impl<'de> DeserializeSeed<'de> for Top<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON-RPC message or batch")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Message(self.0).fill(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Lenient(Message(&mut *self.0)))?.is_some() {}
        Ok(())
    }
}

/// A string value, or `None` for any other value.
fn text(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        _ => None,
    }
}

struct Message<'c, 'de>(&'c mut Vec<CallFacts<'de>>);

impl<'de> Fill<'de> for Message<'_, 'de> {
    fn fill<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.push(CallFacts::default());
        let Some(call) = self.0.last_mut() else {
            return Ok(());
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "method" => {
                    call.method = None;
                    call.method = text(map.next_value()?);
                }
                "id" => {
                    call.id = None;
                    call.id = Some(map.next_value()?);
                }
                "params" => {
                    *call = CallFacts {
                        method: call.method.take(),
                        id: call.id.take(),
                        ..CallFacts::default()
                    };
                    map.next_value_seed(Lenient(Params(&mut *call)))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        call.ended = true;
        Ok(())
    }
}

struct Params<'c, 'de>(&'c mut CallFacts<'de>);

impl<'de> Fill<'de> for Params<'_, 'de> {
    fn fill<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let call = self.0;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => {
                    call.params_name = None;
                    call.params_name = text(map.next_value()?);
                }
                "uri" => {
                    call.params_uri = None;
                    call.params_uri = text(map.next_value()?);
                }
                "arguments" => {
                    call.arguments = None;
                    let raw: &'de RawValue = map.next_value()?;
                    call.arguments = Some(raw.get().as_bytes());
                }
                "_meta" => {
                    call.traceparent = None;
                    call.tracestate = None;
                    map.next_value_seed(Lenient(Meta(&mut *call)))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct Meta<'c, 'de>(&'c mut CallFacts<'de>);

impl<'de> Fill<'de> for Meta<'_, 'de> {
    fn fill<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let call = self.0;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "traceparent" => {
                    call.traceparent = None;
                    call.traceparent = text(map.next_value()?);
                }
                "tracestate" => {
                    call.tracestate = None;
                    call.tracestate = text(map.next_value()?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}
