//! Every document type of the spec through JSON and XML and back: a sample with every property
//! set is built from the published schema, decoded from JSON, written as XML (which must be
//! valid against the generated XSD, checked with `xmllint --schema`), read back, and written as
//! JSON again. OMA's older instance-based JSON (strings for numbers and booleans, one item for
//! a one-item list) must decode to the same value.

mod support;

use netapi_chat_api::*;
use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire::{self, Document};
use netapi_chat_runtime::xml::XmlLimits;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use support::doc_types::published;

/// A value for every property (two items per list, the first enum value, the first member of
/// an `x-oma-choice`), following the published schemas.
fn sample(doc: &Value, schema: &Value, depth: usize, instance_based: bool) -> Value {
    // A reference named for XML (`allOf` of one beside `xml.name`): the referenced schema.
    if let Some([only]) = schema
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        return sample(doc, only, depth, instance_based);
    }
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = doc
            .pointer(r.trim_start_matches('#'))
            .expect("ref resolves");
        return sample(doc, target, depth + 1, instance_based);
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return e[0].clone();
    }
    match schema["type"].as_str() {
        Some("object") => {
            let choice: Vec<&str> = support::doc_types::names(schema, "x-oma-choice");
            let mut out = serde_json::Map::new();
            for (name, p) in schema["properties"].as_object().expect("properties") {
                if choice.len() > 1 && choice[1..].contains(&name.as_str()) {
                    continue;
                }
                out.insert(name.clone(), sample(doc, p, depth + 1, instance_based));
            }
            Value::Object(out)
        }
        Some("array") => {
            let item = sample(doc, &schema["items"], depth + 1, instance_based);
            if instance_based {
                item
            } else {
                json!([item.clone(), item])
            }
        }
        // A date-time is one: the XSD its XML is checked against says `xsd:dateTime`.
        Some("string") if schema["format"] == "date-time" => json!("2026-12-03T17:00:00.25+01:00"),
        Some("string") => json!(format!("s<&>\"'{depth}")),
        Some("boolean") => {
            if instance_based {
                json!("true")
            } else {
                json!(true)
            }
        }
        Some("integer") => {
            if instance_based {
                json!("42")
            } else {
                json!(42)
            }
        }
        other => panic!("unexpected schema type {other:?}"),
    }
}

fn roundtrip<T: Document + std::fmt::Debug + PartialEq>(name: &str) {
    let doc = published();
    let schema = &doc["components"]["schemas"][name];
    let root = schema["xml"]["name"].as_str().expect("root name");
    let wrapped = json!({ root: sample(doc, schema, 0, false) });
    let limits = XmlLimits::default();

    let from_json: T = wire::decode(Format::Json, wrapped.to_string().as_bytes(), &limits)
        .unwrap_or_else(|e| panic!("{name} from JSON: {e}\n{wrapped}"));
    let xml = String::from_utf8(wire::encode(Format::Xml, &from_json)).expect("utf-8");
    support::xsd_validate(&xml);
    let from_xml: T = wire::decode(Format::Xml, xml.as_bytes(), &limits)
        .unwrap_or_else(|e| panic!("{name} from XML: {e}\n{xml}"));
    assert_eq!(
        from_xml, from_json,
        "{name}: XML round trip changed the value\n{xml}"
    );
    let json_again: Value =
        serde_json::from_slice(&wire::encode(Format::Json, &from_xml)).expect("JSON");
    assert_eq!(
        json_again, wrapped,
        "{name}: JSON written back differs from the sample"
    );

    // OMA's instance-based JSON (2012 Common) reads as the same value, apart from list lengths.
    let older = json!({ root: sample(doc, schema, 0, true) });
    let from_older: T = wire::decode(Format::Json, older.to_string().as_bytes(), &limits)
        .unwrap_or_else(|e| panic!("{name} from instance-based JSON: {e}\n{older}"));
    let once: Value =
        serde_json::from_slice(&wire::encode(Format::Json, &from_older)).expect("JSON");
    assert_eq!(
        once,
        json!({ root: sample_with_one_item_lists(doc, schema) }),
        "{name}: instance-based JSON"
    );
}

fn sample_with_one_item_lists(doc: &Value, schema: &Value) -> Value {
    fn shrink(v: &mut Value) {
        match v {
            Value::Array(a) => {
                a.truncate(1);
                a.iter_mut().for_each(shrink);
            }
            Value::Object(m) => m.values_mut().for_each(shrink),
            _ => {}
        }
    }
    let mut v = sample(doc, schema, 0, false);
    shrink(&mut v);
    v
}

macro_rules! roots {
    ($($t:ident),* $(,)?) => {
        /// Every document type this test covers.
        const COVERED: &[&str] = &[$(stringify!($t)),*];

        #[test]
        fn every_document_type_round_trips() {
            $( roundtrip::<$t>(stringify!($t)); )*
        }
    };
}

// Every document type of the spec, from the one list (`support/doc_types.rs`).
support::doc_types::for_each_document_type!(roots);

#[test]
fn every_root_schema_of_the_spec_is_covered() {
    let covered: BTreeSet<&str> = COVERED.iter().copied().collect();
    assert_eq!(
        covered,
        support::doc_types::root_schemas(),
        "add new document types to support/doc_types.rs"
    );
}

#[test]
fn xml_decoding_checks_root_name_and_namespace() {
    let limits = XmlLimits::default();
    let ok = r#"<chat:chatMessage xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><text>hi</text></chat:chatMessage>"#;
    let m: ChatMessage = wire::decode(Format::Xml, ok.as_bytes(), &limits).expect("valid");
    assert_eq!(m.text, "hi");
    let default_ns =
        r#"<chatMessage xmlns="urn:oma:xml:rest:netapi:chat:1"><text>hi</text></chatMessage>"#;
    assert!(wire::decode::<ChatMessage>(Format::Xml, default_ns.as_bytes(), &limits).is_ok());
    for bad in [
        r#"<chat:chatMessage xmlns:chat="urn:other"><text>hi</text></chat:chatMessage>"#,
        r#"<chatMessage><text>hi</text></chatMessage>"#,
        r#"<chat:chatSessionInformation xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><text>hi</text></chat:chatSessionInformation>"#,
    ] {
        let e = wire::decode::<ChatMessage>(Format::Xml, bad.as_bytes(), &limits).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.rendered().contains("chatMessage"), "{}", e.rendered());
    }
}

#[test]
fn enums_read_case_insensitively() {
    let limits = XmlLimits::default();
    let s: MessageDeliveryStatus = wire::decode(
        Format::Json,
        br#"{"messageDeliveryStatus":{"status":"DELIVERED"}}"#,
        &limits,
    )
    .expect("upper case");
    assert_eq!(s.status, MessageStatus::Delivered);
    let e = wire::decode::<MessageDeliveryStatus>(
        Format::Json,
        br#"{"messageDeliveryStatus":{"status":"Bogus"}}"#,
        &limits,
    )
    .unwrap_err();
    assert!(
        e.rendered().contains("Sent, Delivered, Displayed, Failed"),
        "{}",
        e.rendered()
    );
}
