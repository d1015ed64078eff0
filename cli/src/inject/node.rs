//! A YAML document as an ordered tree: mappings keep their keys in the order written,
//! so `mesh inject` and `mesh uninject` change only what they mean to and leave the
//! rest of a manifest as it was, key order included.
//!
//! serde_json's map sorts its keys unless its `preserve_order` feature is on, and
//! that feature is one for the whole workspace (every crate's JSON output would change
//! order); a small tree of our own costs nothing elsewhere. Comments are not kept:
//! no YAML library here keeps them through a parse.

use serde::{
    de::{self, MapAccess, SeqAccess, Visitor},
    ser::{SerializeMap as _, SerializeSeq as _},
    Deserialize, Deserializer, Serialize, Serializer,
};
use serde_json::Value;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node at `path` (mapping keys), if every step is there.
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, key| node.get(key))
    }

    pub fn at_mut(&mut self, path: &[&str]) -> Option<&mut Node> {
        path.iter().try_fold(self, |node, key| node.get_mut(key))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Sets `key` in a mapping: in place when present, appended when not. `false`
    /// when this is no mapping.
    pub fn set(&mut self, key: &str, value: Node) -> bool {
        let Node::Map(entries) = self else {
            return false;
        };
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => entries.push((key.to_string(), value)),
        }
        true
    }

    /// Removes `key` from a mapping, returning whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let Node::Map(entries) = self else {
            return false;
        };
        let before = entries.len();
        entries.retain(|(k, _)| k != key);
        entries.len() != before
    }

    /// The mapping at `path`, made (empty, appended) where missing or null. `None`
    /// when something on the way is neither a mapping nor missing.
    pub fn map_at(&mut self, path: &[&str]) -> Option<&mut Node> {
        let mut node = self;
        for key in path {
            if matches!(node.get(key), None | Some(Node::Null))
                && !node.set(key, Node::Map(Vec::new()))
            {
                return None;
            }
            node = node.get_mut(key)?;
            if !matches!(node, Node::Map(_)) {
                return None;
            }
        }
        Some(node)
    }

    /// As JSON (mappings sorted by serde_json's map; only for reading).
    pub fn to_json(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => (*b).into(),
            Node::Int(i) => (*i).into(),
            Node::UInt(u) => (*u).into(),
            Node::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Node::Str(s) => s.clone().into(),
            Node::Seq(items) => items.iter().map(Node::to_json).collect(),
            Node::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    /// From JSON (for what the injector adds; its keys in serde_json's order).
    pub fn from_json(v: &Value) -> Node {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Node::Int(i),
                (_, Some(u), _) => Node::UInt(u),
                (_, _, Some(f)) => Node::Float(f),
                _ => Node::Null,
            },
            Value::String(s) => Node::Str(s.clone()),
            Value::Array(items) => Node::Seq(items.iter().map(Node::from_json).collect()),
            Value::Object(m) => Node::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), Node::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Applies one RFC 6902 `add` at `pointer` (as `mesh_core::inject::Patch` writes
    /// them): a mapping's key set in place or appended, a sequence's index inserted
    /// before, `-` appended.
    pub fn add(&mut self, pointer: &str, value: Node) -> Result<(), String> {
        let parts: Vec<String> = pointer
            .strip_prefix('/')
            .ok_or_else(|| format!("{pointer}: not a JSON pointer"))?
            .split('/')
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = parts.split_last().ok_or("empty pointer")?;
        let mut node = self;
        for part in parents {
            node = match node {
                Node::Map(_) => node.get_mut(part),
                Node::Seq(items) => part.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
                _ => None,
            }
            .ok_or_else(|| format!("{pointer}: no {part:?} to add under"))?;
        }
        match node {
            Node::Map(_) => {
                node.set(last, value);
                Ok(())
            }
            Node::Seq(items) if last == "-" => {
                items.push(value);
                Ok(())
            }
            Node::Seq(items) => match last.parse::<usize>() {
                Ok(i) if i <= items.len() => {
                    items.insert(i, value);
                    Ok(())
                }
                _ => Err(format!("{pointer}: index out of range")),
            },
            _ => Err(format!(
                "{pointer}: the parent is neither a mapping nor a list"
            )),
        }
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Int(i) => s.serialize_i64(*i),
            Node::UInt(u) => s.serialize_u64(*u),
            Node::Float(f) => s.serialize_f64(*f),
            Node::Str(v) => s.serialize_str(v),
            Node::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Node::Int(i),
            Err(_) => Node::UInt(v),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Key, Node>()? {
            entries.push((k.0, v));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key: text, or a number or boolean written as its text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Node::deserialize(d)? {
            Node::Str(s) => Ok(Key(s)),
            Node::Int(i) => Ok(Key(i.to_string())),
            Node::UInt(u) => Ok(Key(u.to_string())),
            Node::Bool(b) => Ok(Key(b.to_string())),
            Node::Float(f) => Ok(Key(f.to_string())),
            Node::Null => Ok(Key("null".into())),
            _ => Err(de::Error::custom("a mapping key must be a scalar")),
        }
    }
}
