//! The fake API server's state: objects by kind and key, the global resourceVersion, and
//! each kind's retained history of changes.
//!
//! Keys are etcd's (`<namespace>/<name>`) and kept in a `BTreeMap`, so lists come out in
//! the order a real API server returns them and a continue token's "start key" means the
//! same thing. Every change keeps the object as it was before (`prev`), which is what
//! lets a paginated list be served from a consistent snapshot at its resourceVersion, and
//! lets a watch with a selector turn "no longer matches" into `DELETED` as the API
//! server's watch cache does. History is bounded per kind; once a change is dropped, the
//! resourceVersions before it are "compacted" and answer `410 Gone`.

use std::{
    collections::{BTreeMap, VecDeque},
    ops::Bound,
    sync::Arc,
};

use anyhow::{bail, Context as _};
use bytes::{BufMut as _, Bytes, BytesMut};
use serde_json::{Map, Value};

use super::{
    select::{FieldSelector, LabelSelector},
    types::{Others, Type},
    Kind,
};

/// One stored object, serialized once.
#[derive(Debug)]
pub(super) struct Object {
    /// `<namespace>/<name>`.
    key: Box<str>,
    ns_len: usize,
    labels: BTreeMap<String, String>,
    uid: Box<str>,
    created: Box<str>,
    pub(super) rv: u64,
    /// The whole object, `{"apiVersion":..,"kind":..,` first: what a GET or a watch
    /// event carries.
    pub(super) json: Bytes,
    /// Where the object's fields after `apiVersion` and `kind` start in `json`; a list
    /// item is `{` followed by these, since the API server leaves type information out
    /// of list items.
    rest: usize,
}

impl Object {
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    pub(super) fn namespace(&self) -> &str {
        &self.key[..self.ns_len]
    }

    pub(super) fn name(&self) -> &str {
        &self.key[self.ns_len + 1..]
    }

    /// The object as a list item: without `apiVersion` and `kind`.
    pub(super) fn write_list_item(&self, out: &mut BytesMut) {
        out.put_u8(b'{');
        out.put_slice(&self.json[self.rest..]);
    }

    fn fields_after_type(&self) -> &[u8] {
        &self.json[self.rest..]
    }

    pub(super) fn to_value(&self) -> Value {
        serde_json::from_slice(&self.json).expect("stored objects are valid JSON")
    }

    /// This object as of a later resourceVersion with no other change: what a `DELETED`
    /// event carries.
    pub(super) fn restamped(&self, kind: Kind, rv: u64) -> Object {
        let mut value = self.to_value();
        value["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let Value::Object(mut map) = value else {
            unreachable!("stored objects are JSON objects")
        };
        map.remove("apiVersion");
        map.remove("kind");
        let (json, rest) = serialize(kind, &map);
        Object {
            key: self.key.clone(),
            ns_len: self.ns_len,
            labels: self.labels.clone(),
            uid: self.uid.clone(),
            created: self.created.clone(),
            rv,
            json,
            rest,
        }
    }

    /// The value of a field selector's field, as the API server renders it.
    fn field(&self, field: &str, parsed: &mut Option<Value>) -> String {
        match field {
            "metadata.name" => self.name().to_owned(),
            "metadata.namespace" => self.namespace().to_owned(),
            path => {
                let value = parsed.get_or_insert_with(|| self.to_value());
                let mut at = &*value;
                for part in path.split('.') {
                    at = &at[part];
                }
                match at {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    _ if path == "spec.hostNetwork" => "false".to_owned(),
                    _ => String::new(),
                }
            }
        }
    }
}

/// Serializes an object's fields (without `apiVersion` and `kind`) behind its type, and
/// says where the fields start.
fn serialize(kind: Kind, fields: &Map<String, Value>) -> (Bytes, usize) {
    let body = serde_json::to_vec(fields).expect("a JSON map serializes");
    let head = format!(
        r#"{{"apiVersion":"{}","kind":"{}","#,
        kind.api_version(),
        kind.kind()
    );
    let mut json = BytesMut::with_capacity(head.len() + body.len());
    json.put_slice(head.as_bytes());
    // `body` is `{...}` with at least `metadata` inside.
    json.put_slice(&body[1..]);
    (json.freeze(), head.len())
}

/// What a list or watch selects: a namespace (or all), maybe one name, and selectors.
#[derive(Clone, Debug, Default)]
pub(super) struct Filter {
    /// `""` for all namespaces, else `<namespace>/`.
    pub(super) prefix: String,
    pub(super) name: Option<String>,
    pub(super) labels: LabelSelector,
    pub(super) fields: FieldSelector,
}

impl Filter {
    pub(super) fn has_selectors(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty() || self.name.is_some()
    }

    pub(super) fn matches(&self, obj: &Object) -> bool {
        if !obj.key().starts_with(&self.prefix) {
            return false;
        }
        if self.name.as_deref().is_some_and(|n| n != obj.name()) {
            return false;
        }
        if !self.labels.matches(&obj.labels) {
            return false;
        }
        let mut parsed = None;
        self.fields
            .terms()
            .iter()
            .all(|t| (obj.field(&t.field, &mut parsed) == t.value) == t.equal)
    }
}

/// One change to one object, as retained in a kind's history.
#[derive(Debug)]
pub(super) struct Change {
    pub(super) rv: u64,
    /// The object after the change; for a deletion, the last state stamped with the
    /// deletion's resourceVersion.
    pub(super) obj: Arc<Object>,
    pub(super) deleted: bool,
    /// The object before the change, if it existed.
    pub(super) prev: Option<Arc<Object>>,
}

#[derive(Debug, Default)]
struct KindStore {
    objects: BTreeMap<Box<str>, Arc<Object>>,
    history: VecDeque<Arc<Change>>,
    /// Every change with a resourceVersion above this one is in `history`: a watch or a
    /// continued list from here on can be served, one from before cannot.
    complete_after: u64,
}

#[derive(Debug)]
pub(super) struct Store {
    rv: u64,
    /// Bumped by `expire`; open watches end when it changes.
    epoch: u64,
    history_limit: usize,
    kinds: [KindStore; Kind::ALL.len()],
    /// The objects of the kinds nothing watches (`types.rs`), at the same
    /// resourceVersions.
    pub(super) others: Others,
}

/// Why a resourceVersion cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RvError {
    /// Older than the retained history: 410 Gone.
    TooOld { requested: u64, oldest: u64 },
    /// Newer than anything this server has written: 504, as the API server answers after
    /// waiting a while for its cache to catch up.
    TooLarge { requested: u64, current: u64 },
}

/// One page of a list.
pub(super) struct Page {
    pub(super) items: Vec<Arc<Object>>,
    /// The key to continue from (the last item's key and a NUL, as etcd's range start).
    pub(super) next: Option<String>,
    /// How many matching items follow this page, given only without selectors (as the
    /// API server does).
    pub(super) remaining: Option<u64>,
}

pub(super) const DEFAULT_HISTORY_LIMIT: usize = 10_000;

impl Store {
    pub(super) fn new() -> Self {
        // etcd's revisions start at 1; "0" means "any" to clients, so it is never used.
        let rv = 1;
        Self {
            rv,
            epoch: 0,
            history_limit: DEFAULT_HISTORY_LIMIT,
            kinds: std::array::from_fn(|_| KindStore {
                complete_after: rv,
                ..KindStore::default()
            }),
            others: Others::new(rv, &now_rfc3339()),
        }
    }

    /// Takes the next resourceVersion for a write to a kind nothing watches.
    pub(super) fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Creates or replaces an object of a kind nothing watches, by namespace (empty for
    /// a cluster-scoped kind) and name; writes nothing when it is identical to the
    /// stored one. Returns its resourceVersion and whether it changed.
    pub(super) fn put_other(
        &mut self,
        t: &'static Type,
        namespace: &str,
        name: &str,
        obj: Value,
        now: &str,
    ) -> (Value, bool) {
        if let Some(old) = self.others.get(t, namespace, name) {
            let mut same = obj.clone();
            same["metadata"]["uid"] = old["metadata"]["uid"].clone();
            same["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            same["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            if &same == old {
                return (same, false);
            }
        }
        let rv = self.bump();
        (self.others.put(t, namespace, name, obj, rv, now), true)
    }

    pub(super) fn rv(&self) -> u64 {
        self.rv
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    fn kind(&self, kind: Kind) -> &KindStore {
        &self.kinds[kind.index()]
    }

    /// Creates or replaces an object; returns its resourceVersion, which is unchanged (and
    /// nothing is written) when the object is identical to the stored one, as the API
    /// server skips no-op updates.
    pub(super) fn apply(&mut self, value: Value, now: &str) -> anyhow::Result<(u64, bool)> {
        let Value::Object(mut map) = value else {
            bail!("an object must be a JSON object");
        };
        let api_version = map.remove("apiVersion");
        let kind_name = map.remove("kind");
        let (Some(Value::String(api_version)), Some(Value::String(kind_name))) =
            (&api_version, &kind_name)
        else {
            bail!("an object needs string apiVersion and kind fields");
        };
        let Some(kind) = Kind::from_type(api_version, kind_name) else {
            let Some(t) = Type::from_type(api_version, kind_name) else {
                bail!("unsupported type {api_version}/{kind_name}");
            };
            return self.apply_other(t, api_version.clone(), kind_name.clone(), map, now);
        };
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .context("metadata must be an object")?;
        let name = match meta.get("name") {
            Some(Value::String(name)) if valid_name(name) => name.clone(),
            other => bail!("invalid metadata.name {other:?}"),
        };
        let namespace = match meta.get("namespace") {
            None | Some(Value::Null) => "default".to_owned(),
            Some(Value::String(ns)) if valid_name(ns) => ns.clone(),
            other => bail!("invalid metadata.namespace {other:?}"),
        };
        meta.insert("namespace".into(), Value::String(namespace.clone()));
        let labels = match meta.get("labels") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(labels)) => labels
                .iter()
                .map(|(k, v)| match v {
                    Value::String(v) => Ok((k.clone(), v.clone())),
                    _ => bail!("label {k} is not a string"),
                })
                .collect::<anyhow::Result<_>>()?,
            Some(_) => bail!("metadata.labels must be an object"),
        };
        let key = format!("{namespace}/{name}");
        let ks = &self.kinds[kind.index()];
        let existing = ks.objects.get(key.as_str()).cloned();
        // Identity and age survive updates; the server owns them, not the caller.
        let (uid, created) = match &existing {
            Some(e) => (e.uid.clone(), e.created.clone()),
            None => (new_uid().into(), now.into()),
        };
        meta.insert("uid".into(), Value::String(uid.to_string()));
        meta.insert(
            "creationTimestamp".into(),
            Value::String(created.to_string()),
        );
        if let Some(existing) = &existing {
            meta.insert("resourceVersion".into(), existing.rv.to_string().into());
            let (json, rest) = serialize(kind, &map);
            if json[rest..] == *existing.fields_after_type() {
                return Ok((existing.rv, false));
            }
        }
        let rv = self.rv + 1;
        map.get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("metadata was checked above")
            .insert("resourceVersion".into(), rv.to_string().into());
        let (json, rest) = serialize(kind, &map);
        let obj = Arc::new(Object {
            key: key.clone().into(),
            ns_len: namespace.len(),
            labels,
            uid,
            created,
            rv,
            json,
            rest,
        });
        self.rv = rv;
        let ks = &mut self.kinds[kind.index()];
        let prev = ks.objects.insert(key.into(), obj.clone());
        self.record(
            kind,
            Change {
                rv,
                obj,
                deleted: false,
                prev,
            },
        );
        Ok((rv, true))
    }

    /// [`Store::apply`] of a kind nothing watches.
    fn apply_other(
        &mut self,
        t: &'static Type,
        api_version: String,
        kind: String,
        mut map: Map<String, Value>,
        now: &str,
    ) -> anyhow::Result<(u64, bool)> {
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .context("metadata must be an object")?;
        let name = match meta.get("name") {
            Some(Value::String(name)) if valid_name(name) => name.clone(),
            other => bail!("invalid metadata.name {other:?}"),
        };
        let namespace = if t.namespaced {
            let ns = match meta.get("namespace") {
                None | Some(Value::Null) => "default".to_owned(),
                Some(Value::String(ns)) if valid_name(ns) => ns.clone(),
                other => bail!("invalid metadata.namespace {other:?}"),
            };
            meta.insert("namespace".into(), Value::String(ns.clone()));
            ns
        } else {
            meta.remove("namespace");
            String::new()
        };
        let mut obj = Map::new();
        obj.insert("apiVersion".into(), api_version.into());
        obj.insert("kind".into(), kind.into());
        obj.extend(map);
        let (stored, changed) = self.put_other(t, &namespace, &name, Value::Object(obj), now);
        let rv = stored["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(self.rv);
        Ok((rv, changed))
    }

    /// Deletes an object at once (as with a zero grace period); returns the deletion's
    /// resourceVersion, or `None` if there was no such object.
    pub(super) fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> Option<u64> {
        let key = format!("{namespace}/{name}");
        let prev = self.kinds[kind.index()].objects.remove(key.as_str())?;
        let rv = self.rv + 1;
        self.rv = rv;
        let obj = Arc::new(prev.restamped(kind, rv));
        self.record(
            kind,
            Change {
                rv,
                obj,
                deleted: true,
                prev: Some(prev),
            },
        );
        Some(rv)
    }

    fn record(&mut self, kind: Kind, change: Change) {
        let limit = self.history_limit;
        let ks = &mut self.kinds[kind.index()];
        ks.history.push_back(Arc::new(change));
        while ks.history.len() > limit {
            let dropped = ks.history.pop_front().expect("history is over its limit");
            ks.complete_after = dropped.rv;
        }
    }

    /// Compacts every kind's history, as etcd compaction does, after a write elsewhere in
    /// the cluster moved the resourceVersion on: any resourceVersion a client holds is
    /// now too old to watch from or continue a list at.
    pub(super) fn expire(&mut self) {
        self.rv += 1;
        self.epoch += 1;
        for ks in &mut self.kinds {
            ks.history.clear();
            ks.complete_after = self.rv;
        }
    }

    pub(super) fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit.max(1);
        for kind in Kind::ALL {
            let ks = &mut self.kinds[kind.index()];
            while ks.history.len() > self.history_limit {
                let dropped = ks.history.pop_front().expect("history is over its limit");
                ks.complete_after = dropped.rv;
            }
        }
    }

    pub(super) fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Object>> {
        let key = format!("{namespace}/{name}");
        self.kind(kind).objects.get(key.as_str()).cloned()
    }

    /// Checks that `rv` can be served for `kind`: neither compacted nor in the future.
    pub(super) fn check_rv(&self, kind: Kind, rv: u64) -> Result<(), RvError> {
        let oldest = self.kind(kind).complete_after;
        if rv < oldest {
            Err(RvError::TooOld {
                requested: rv,
                oldest,
            })
        } else if rv > self.rv {
            Err(RvError::TooLarge {
                requested: rv,
                current: self.rv,
            })
        } else {
            Ok(())
        }
    }

    /// Every current object of `kind` that `filter` selects.
    pub(super) fn snapshot(&self, kind: Kind, filter: &Filter) -> Vec<Arc<Object>> {
        self.kind(kind)
            .objects
            .range::<str, _>((Bound::Included(filter.prefix.as_str()), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&filter.prefix))
            .filter(|(_, o)| filter.matches(o))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The changes to `kind` after `rv`, or `None` if some of them have been compacted.
    pub(super) fn changes_after(&self, kind: Kind, rv: u64) -> Option<Vec<Arc<Change>>> {
        let ks = self.kind(kind);
        if rv < ks.complete_after {
            return None;
        }
        let from = ks.history.partition_point(|c| c.rv <= rv);
        Some(ks.history.range(from..).cloned().collect())
    }

    /// One page of the list of `kind` as it was at resourceVersion `at` (which
    /// `check_rv` has accepted), from key `start` on.
    pub(super) fn list(
        &self,
        kind: Kind,
        filter: &Filter,
        at: u64,
        start: &str,
        limit: Option<usize>,
    ) -> Page {
        let ks = self.kind(kind);
        // The state at `at` is the current state with every later change undone: the
        // first change to a key after `at` knows what the key held before.
        let mut undo: BTreeMap<&str, Option<&Arc<Object>>> = BTreeMap::new();
        let from = ks.history.partition_point(|c| c.rv <= at);
        for change in ks.history.range(from..) {
            undo.entry(change.obj.key()).or_insert(change.prev.as_ref());
        }
        let lower = if start > filter.prefix.as_str() {
            start
        } else {
            filter.prefix.as_str()
        };
        let range = (Bound::Included(lower), Bound::Unbounded);
        let mut current = ks
            .objects
            .range::<str, _>(range)
            .map(|(k, o)| (&**k, Some(o)))
            .peekable();
        let mut undone = undo
            .range::<&str, _>(range)
            .map(|(k, o)| (*k, *o))
            .peekable();
        let merged = std::iter::from_fn(move || match (current.peek(), undone.peek()) {
            (None, None) => None,
            (Some(_), None) => current.next(),
            (None, Some(_)) => undone.next(),
            (Some((a, _)), Some((b, _))) => {
                if a < b {
                    current.next()
                } else {
                    if a == b {
                        current.next();
                    }
                    undone.next()
                }
            }
        })
        .take_while(|(k, _)| k.starts_with(&filter.prefix))
        .filter_map(|(_, o)| o.filter(|o| filter.matches(o)));

        let limit = limit.unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut rest = merged;
        for obj in rest.by_ref() {
            if items.len() == limit {
                // There is at least one more item: this one.
                let remaining = if filter.has_selectors() {
                    None
                } else {
                    Some(1 + rest.count() as u64)
                };
                let last: &Arc<Object> = items.last().expect("limit is at least one");
                return Page {
                    next: Some(format!("{}\0", last.key())),
                    items,
                    remaining,
                };
            }
            items.push(obj.clone());
        }
        Page {
            items,
            next: None,
            remaining: None,
        }
    }
}

/// Names and namespaces: non-empty, no `/` (which would break keys), no NUL.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '\0']) && s.len() <= 253
}

pub(super) fn new_uid() -> String {
    let b: u128 = rand::random();
    let hex = format!("{b:032x}");
    format!(
        "{}-{}-4{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The current UTC time in RFC 3339 with seconds, as `creationTimestamp` is written.
pub(super) fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn svc(ns: &str, name: &str, label: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": label}},
            "spec": {"clusterIP": "198.18.0.1"},
        })
    }

    fn names(page: &Page) -> Vec<&str> {
        page.items.iter().map(|o| o.key()).collect()
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let at = |secs| rfc3339(time::OffsetDateTime::from_unix_timestamp(secs).unwrap());
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn objects_serialize_with_type_first_and_list_items_without_it() {
        let mut store = Store::new();
        store
            .apply(svc("ns", "a", "x"), "2025-01-01T00:00:00Z")
            .unwrap();
        let obj = store.get(Kind::Service, "ns", "a").unwrap();
        assert!(obj
            .json
            .starts_with(br#"{"apiVersion":"v1","kind":"Service","metadata":"#));
        let mut item = BytesMut::new();
        obj.write_list_item(&mut item);
        let item: Value = serde_json::from_slice(&item).unwrap();
        assert_eq!(item.get("kind"), None);
        assert_eq!(item["metadata"]["resourceVersion"], "2");
        assert_eq!(
            item["metadata"]["creationTimestamp"],
            "2025-01-01T00:00:00Z"
        );
    }

    #[test]
    fn identical_updates_write_nothing_and_identity_survives_updates() {
        let mut store = Store::new();
        let (rv, changed) = store.apply(svc("ns", "a", "x"), "t0").unwrap();
        assert!(changed);
        let uid = store.get(Kind::Service, "ns", "a").unwrap().uid.clone();
        assert_eq!(store.apply(svc("ns", "a", "x"), "t1").unwrap(), (rv, false));
        let (rv2, changed) = store.apply(svc("ns", "a", "y"), "t1").unwrap();
        assert!(changed && rv2 == rv + 1);
        let obj = store.get(Kind::Service, "ns", "a").unwrap().to_value();
        assert_eq!(obj["metadata"]["uid"], &*uid);
        assert_eq!(obj["metadata"]["creationTimestamp"], "t0");
    }

    #[test]
    fn lists_are_in_etcd_key_order_and_namespaces_do_not_bleed() {
        let mut store = Store::new();
        // `a-b/..` sorts before `a/..` as a string, though `a` < `a-b` as a namespace.
        for (ns, name) in [("a", "x"), ("a-b", "x"), ("b", "x"), ("a", "y")] {
            store.apply(svc(ns, name, "l"), "t").unwrap();
        }
        let all = store.list(Kind::Service, &Filter::default(), store.rv(), "", None);
        assert_eq!(names(&all), ["a-b/x", "a/x", "a/y", "b/x"]);
        let ns_a = Filter {
            prefix: "a/".into(),
            ..Filter::default()
        };
        let page = store.list(Kind::Service, &ns_a, store.rv(), "", None);
        assert_eq!(names(&page), ["a/x", "a/y"]);
    }

    #[test]
    fn pages_continue_from_a_consistent_snapshot() {
        let mut store = Store::new();
        for name in ["a", "b", "c", "d"] {
            store.apply(svc("ns", name, "l"), "t").unwrap();
        }
        let at = store.rv();
        let f = Filter::default();
        let first = store.list(Kind::Service, &f, at, "", Some(2));
        assert_eq!(names(&first), ["ns/a", "ns/b"]);
        assert_eq!(first.remaining, Some(2));
        // Changes after the snapshot must not show in later pages.
        store.delete(Kind::Service, "ns", "c").unwrap();
        store.apply(svc("ns", "bb", "l"), "t").unwrap();
        store.apply(svc("ns", "d", "changed"), "t").unwrap();
        let second = store.list(
            Kind::Service,
            &f,
            at,
            first.next.as_deref().unwrap(),
            Some(2),
        );
        assert_eq!(names(&second), ["ns/c", "ns/d"]);
        assert_eq!(second.items[1].labels["app"], "l");
        assert_eq!(second.next, None);
        // The current state has all three changes.
        let now = store.list(Kind::Service, &f, store.rv(), "", None);
        assert_eq!(names(&now), ["ns/a", "ns/b", "ns/bb", "ns/d"]);
    }

    #[test]
    fn history_beyond_the_limit_is_compacted() {
        let mut store = Store::new();
        store.set_history_limit(2);
        let (rv1, _) = store.apply(svc("ns", "a", "1"), "t").unwrap();
        let (rv2, _) = store.apply(svc("ns", "a", "2"), "t").unwrap();
        store.apply(svc("ns", "a", "3"), "t").unwrap();
        assert_eq!(
            store.check_rv(Kind::Service, rv1 - 1),
            Err(RvError::TooOld {
                requested: rv1 - 1,
                oldest: rv1
            })
        );
        assert!(store.changes_after(Kind::Service, rv1 - 1).is_none());
        let changes = store.changes_after(Kind::Service, rv1).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].rv, rv2);
        // Other kinds keep their own history.
        assert_eq!(store.check_rv(Kind::Pod, 1), Ok(()));
        store.expire();
        assert!(store.check_rv(Kind::Pod, 1).is_err());
        assert_eq!(store.check_rv(Kind::Pod, store.rv()), Ok(()));
    }
}
