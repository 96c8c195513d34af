//! How are the shapes PHP's `json_encode` gives evidence bundles read back?
//!
//! The `deserialize_with` helpers of the bundle types (`model`'s module docs): objects are
//! read from JSON objects only, lists written `[...]` or, when empty, `{}`, free-form maps
//! written `{...}` or as lists, enums by their written names, and a window's cursor from
//! its two `from_` keys.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self as serde_de, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::record::{JsonMap, ReadCursor, php_map};

/// A struct read from a JSON object only. serde's derive also reads a struct from a
/// list of its fields in order; bundles never write that, and a list where an object
/// belongs is refused.
pub(super) struct Object<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(ObjectOnly(deserializer)).map(Object)
    }
}

/// Asks for a map wherever the derive asks for a struct.
struct ObjectOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct enum
        identifier ignored_any
    }
}

/// An object (see [`Object`]).
pub(super) fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Object::deserialize(deserializer).map(|object| object.0)
}

/// An object or `null`; the key must be present.
pub(super) fn nullable_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<Object<T>>::deserialize(deserializer).map(|object| object.map(|object| object.0))
}

/// A list of objects, written `[...]` or, as PHP may write an empty list, `{}`.
pub(super) fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_any(ListVisitor(PhantomData))
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(Object(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<T>, A::Error> {
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(serde_de::Error::invalid_type(
                serde_de::Unexpected::Map,
                &self,
            ));
        }
        Ok(Vec::new())
    }
}

/// A free-form map, written `{...}` or, as PHP writes empty and index-keyed maps, as a
/// list (read with keys "0", "1", ...).
pub(super) fn map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<JsonMap, D::Error> {
    php_map(Value::deserialize(deserializer)?).map_err(|other| {
        serde_de::Error::custom(format_args!(
            "invalid type: {}, expected an object or a list",
            kind(&other)
        ))
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// A name read with `from_name`, refused with `what` when unknown.
pub(super) fn by_name<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    what: &str,
    from_name: fn(&str) -> Option<T>,
) -> Result<T, D::Error> {
    let name = String::deserialize(deserializer)?;
    from_name(&name).ok_or_else(|| serde_de::Error::custom(format!("unknown {what} {name:?}")))
}

/// A window's cursor, written as its two `from_` keys. The keys are read from the
/// window's leftover entries, where no path tracks them, so errors name them.
pub(super) fn window_cursor<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ReadCursor, D::Error> {
    #[derive(Deserialize)]
    struct Keys {
        from_last_consumed_sequence: Value,
        from_byte_offset_hint: Value,
    }
    fn read<'a, T: Deserialize<'a>, E: serde_de::Error>(
        key: &str,
        value: &'a Value,
    ) -> Result<T, E> {
        T::deserialize(value).map_err(|error| E::custom(format_args!("{key}: {error}")))
    }
    let keys = Keys::deserialize(deserializer)?;
    Ok(ReadCursor::new(
        read(
            "from_last_consumed_sequence",
            &keys.from_last_consumed_sequence,
        )?,
        read("from_byte_offset_hint", &keys.from_byte_offset_hint)?,
    ))
}
