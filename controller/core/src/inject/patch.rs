//! JSON Patch (RFC 6902) as the injector writes it: `add` operations only, with paths
//! built from parts so that `~` and `/` in a key (every `mesh.rs/...` annotation has
//! one) are escaped once, here (RFC 6901: `~` → `~0`, `/` → `~1`).

use serde_json::{json, Value};

/// A JSON Patch: the operations, in order. Serializes as the JSON array the API
/// server applies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Patch(pub Vec<Op>);

/// One `add` operation: `value` at `path` (an object member is set or replaced, an
/// array index inserts before that element, `-` appends).
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub path: String,
    pub value: Value,
}

impl Patch {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `value` at the path made of `parts` (each escaped).
    pub fn add(&mut self, parts: &[&str], value: Value) {
        self.0.push(Op {
            path: pointer(parts),
            value,
        });
    }

    /// Sets `key` in the string map at `map` (`["metadata", "annotations"]`), creating
    /// the map when the object has none (`exists` says whether it has one): adding a
    /// member under a missing map fails the whole patch.
    pub fn set_in_map(&mut self, map: &[&str], exists: bool, entries: &[(String, String)]) {
        if entries.is_empty() {
            return;
        }
        if exists {
            for (k, v) in entries {
                let mut parts = map.to_vec();
                parts.push(k);
                self.add(&parts, Value::String(v.clone()));
            }
        } else {
            let object = entries
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>();
            self.add(map, Value::Object(object));
        }
    }

    /// Appends `items` to the array at `array`, creating it when missing (`exists`),
    /// or inserts them from index `at` when given.
    pub fn extend_array(
        &mut self,
        array: &[&str],
        exists: bool,
        at: Option<usize>,
        items: Vec<Value>,
    ) {
        if items.is_empty() {
            return;
        }
        if !exists {
            self.add(array, Value::Array(items));
            return;
        }
        for (i, item) in items.into_iter().enumerate() {
            let index = match at {
                Some(at) => (at + i).to_string(),
                None => "-".to_string(),
            };
            let mut parts = array.to_vec();
            parts.push(&index);
            self.add(&parts, item);
        }
    }

    /// The patch as the JSON array RFC 6902 defines.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|op| json!({ "op": "add", "path": op.path, "value": op.value }))
                .collect(),
        )
    }

    /// Applies the patch to `doc` (for `mesh inject --manual` and tests, which have
    /// no API server to do it). Fails, leaving `doc` partly patched, on a path whose
    /// parent does not exist, as the API server would.
    pub fn apply(&self, doc: &mut Value) -> Result<(), String> {
        for op in &self.0 {
            add(doc, &op.path, op.value.clone())?;
        }
        Ok(())
    }
}

/// A JSON Pointer from unescaped parts.
pub fn pointer(parts: &[&str]) -> String {
    let mut out = String::new();
    for part in parts {
        out.push('/');
        out.push_str(&part.replace('~', "~0").replace('/', "~1"));
    }
    out
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let Some(rest) = path.strip_prefix('/') else {
        *doc = value;
        return Ok(());
    };
    let parts: Vec<String> = rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, parents) = parts.split_last().ok_or("empty path")?;
    let mut node = doc;
    for part in parents {
        node = match node {
            Value::Object(map) => map.get_mut(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("{path}: no {part:?} to add under"))?;
    }
    match node {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) if last == "-" => {
            items.push(value);
            Ok(())
        }
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i <= items.len() => {
                items.insert(i, value);
                Ok(())
            }
            _ => Err(format!("{path}: index {last:?} out of range")),
        },
        _ => Err(format!(
            "{path}: the parent is neither an object nor an array"
        )),
    }
}
