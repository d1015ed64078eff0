use super::*;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    name: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    on: Option<bool>,
    #[serde(default, deserialize_with = "null_as_default")]
    items: Vec<Item>,
    #[serde(default, deserialize_with = "null_as_default")]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Item {
    port: u16,
}

fn err(text: &str) -> Error {
    from_str::<Doc>(text).expect_err(text)
}

#[test]
fn the_core_schema_as_serde_yaml_read_it() {
    // `yes` is a string, not a boolean.
    let doc: Doc = from_str("name: yes\n").unwrap();
    assert_eq!(doc.name, "yes");
    let e = err("on: yes\n");
    assert_eq!(
        e.message,
        "invalid type: string \"yes\", expected a boolean"
    );
    // Untyped values: no octal, no underscores, no infinity.
    let v: serde_json::Value = from_str("a: 010\nb: 1_000\nc: 0x10\nd: .inf\ne: ~\n").unwrap();
    assert_eq!(
        v,
        serde_json::json!({"a": "010", "b": "1_000", "c": 16, "d": null, "e": null})
    );
    // A repeated key is refused, with its place.
    let e = err("labels: {a: x, a: y}\n");
    assert_eq!(
        (e.path.as_str(), e.location),
        ("labels.a", Some((1, 16))),
        "{e}"
    );
    assert!(e.message.contains("duplicate mapping key `a`"), "{e}");
    let e = err("items:\n  - port: 1\n    port: 2\n");
    assert_eq!(
        (e.path.as_str(), e.location),
        ("items[0].port", Some((3, 5))),
        "{e}"
    );
    let e = from_str::<serde_json::Value>("a: 1\nb: 2\na: 3\n").unwrap_err();
    assert_eq!((e.path.as_str(), e.location), ("a", Some((3, 1))), "{e}");
    // `<<` is a key like any other.
    let e = err("base: &b {name: x}\n<<: *b\n");
    assert!(e.message.starts_with("unknown field `base`"), "{e}");
}

#[test]
fn nothing_is_an_empty_list_or_map() {
    let doc: Doc = from_str("items:\nlabels:\n").unwrap();
    assert_eq!(doc, Doc::default());
    let doc: Doc = from_str("items: ~\nlabels: null\n").unwrap();
    assert_eq!(doc, Doc::default());
    // JSON's null too.
    let doc: Doc = serde_json::from_value(serde_json::json!({"items": null})).unwrap();
    assert_eq!(doc, Doc::default());
}

#[test]
fn errors_name_path_line_column_and_what_was_found() {
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        (
            "items:\n  - port: 70000\n",
            "items[0].port",
            (2, 11),
            "invalid value: integer `70000`, expected u16",
        ),
        (
            "items:\n  - port: x\n",
            "items[0].port",
            (2, 11),
            "invalid type: string \"x\", expected u16",
        ),
        (
            "items:\n  - port: 80.5\n",
            "items[0].port",
            (2, 11),
            "invalid type: floating point `80.5`, expected u16",
        ),
        (
            "items:\n  - port: [80]\n",
            "items[0].port",
            (2, 11),
            "invalid type: sequence, expected a string, number or boolean",
        ),
        (
            "items: {port: 80}\n",
            "items",
            (1, 8),
            "invalid type: map, expected a sequence",
        ),
        (
            "items: 'it''s'\n",
            "items",
            (1, 8),
            "invalid type: string \"it's\", expected a sequence",
        ),
        (
            "items:\n  port: 80\n",
            "items",
            (2, 3),
            "invalid type: map, expected a sequence",
        ),
        (
            "- a\n",
            ".",
            (1, 1),
            "invalid type: sequence, expected a map",
        ),
        (
            "items:\n  - {}\n",
            "items[0]",
            (2, 5),
            "missing field `port`",
        ),
        (
            "items:\n  - port: 80\n    prot: 81\n",
            "items[0].prot",
            (3, 5),
            "unknown field `prot`, expected `port`",
        ),
        (
            "nmae: x\n",
            "nmae",
            (1, 1),
            "unknown field `nmae`, expected one of `name`, `port`, `on`, `items`, `labels`",
        ),
    ];
    for (text, path, location, message) in cases {
        let e = err(text);
        assert_eq!(
            (e.path.as_str(), e.location, e.message.as_str()),
            (*path, Some(*location), *message),
            "{text:?}"
        );
    }
}

#[test]
fn syntax_errors_have_a_location() {
    let e = err("items: [\n");
    assert_eq!(e.location, Some((1, 8)), "{e}");
    assert!(e.message.contains('['), "{e}");
    let e = err("name: a\n---\nname: b\n");
    assert_eq!(e.location.map(|(line, _)| line), Some(3), "{e}");
}

#[test]
fn size_is_not_limited() {
    // More nodes than serde-saphyr's default budget (250,000) allows.
    let text = format!("[{}]", "0,".repeat(300_000));
    let v: Vec<u8> = from_str(&text).unwrap();
    assert_eq!(v.len(), 300_000);
    // More aliases of one anchor than its default ratio (ten per anchor) allows.
    let text = format!("a: &a x\nb: [{}]\n", vec!["*a"; 500].join(", "));
    let v: serde_json::Value = from_str(&text).unwrap();
    assert_eq!(v["b"].as_array().map(Vec::len), Some(500));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = |n: usize| format!("{}0{}", "[".repeat(n), "]".repeat(n));
    from_str::<serde_json::Value>(&deep(60)).unwrap();
    let e = from_str::<serde_json::Value>(&deep(100)).unwrap_err();
    assert!(e.message.contains("too large or too complex"), "{e}");
    let deep = format!("{}0", "- ".repeat(100));
    let e = from_str::<serde_json::Value>(&deep).unwrap_err();
    assert!(e.message.contains("too large or too complex"), "{e}");
}

#[test]
fn display_says_path_message_and_location() {
    let e = err("items:\n  - port: x\n");
    assert_eq!(
        e.to_string(),
        "items[0].port: invalid type: string \"x\", expected u16 at line 2 column 11"
    );
    let e = err("- a\n");
    assert_eq!(
        e.to_string(),
        "invalid type: sequence, expected a map at line 1 column 1"
    );
}

#[test]
fn written_as_block_yaml_and_read_back() {
    #[derive(Debug, PartialEq, Deserialize, Serialize)]
    struct Out {
        name: String,
        list: Vec<BTreeMap<String, String>>,
    }
    let long = format!("GET /{}", "segment/".repeat(20));
    let out = Out {
        name: long.clone(),
        list: vec![BTreeMap::from([("a: b".into(), "yes".into())])],
    };
    let text = to_string(&out).unwrap();
    assert_eq!(
        text,
        format!("name: {long}\nlist:\n- \"a: b\": \"yes\"\n"),
        "a long string stays on one line"
    );
    assert_eq!(from_str::<Out>(&text).unwrap(), out);
}
