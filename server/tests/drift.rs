//! Drift: the OpenAPI document dropshot derives from the generated API trait must say what the
//! published document (from spec/) says: the same paths, methods, operationIds, parameters,
//! request and response bodies, and the same JSON schemas (properties, required, types, enums,
//! string formats).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

fn dropshot_doc() -> Value {
    netapi_chat_api::stub_api_description()
        .expect("API builds")
        .openapi("drift", dropshot::semver::Version::new(1, 0, 0))
        .json()
        .expect("dropshot OpenAPI")
}

fn published_doc() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/generated/openapi/chat.progenitor.json"
    ))
    .expect("JSON-only projection");
    serde_json::from_str(&text).expect("JSON")
}

fn ref_name(v: &Value) -> Option<String> {
    v.get("$ref")?
        .as_str()?
        .rsplit('/')
        .next()
        .map(str::to_owned)
}

/// A schema reduced to what both generators must agree on.
fn shape(doc: &Value, v: &Value) -> String {
    if let Some(r) = ref_name(v) {
        // A list schema (the spec's `NotificationList`) is its array: schemars writes the
        // transparent struct generated for it in place.
        let target = &doc["components"]["schemas"][&r];
        if target.get("type").and_then(Value::as_str) == Some("array") {
            return shape(doc, target);
        }
        return format!("ref {r}");
    }
    // schemars writes `Option<Named>` as `allOf: [{$ref}]` + `nullable`.
    if let Some(all) = v.get("allOf").and_then(Value::as_array)
        && all.len() == 1
    {
        return shape(doc, &all[0]);
    }
    match v.get("type").and_then(Value::as_str) {
        Some("array") => format!("array of {}", shape(doc, &v["items"])),
        Some("integer") => "integer".to_owned(),
        Some(t) => match (v.get("enum"), v.get("format").and_then(Value::as_str)) {
            (Some(e), _) => format!("{t} enum {e}"),
            // A string's format (`date-time`) is what a generated client types it by.
            (None, Some(f)) => format!("{t} format {f}"),
            (None, None) => t.to_owned(),
        },
        None => format!("untyped {v}"),
    }
}

/// Enum values, whether written as `enum` or (schemars, for documented variants) as a `oneOf`
/// of one-value enums.
fn enum_values(v: &Value) -> Option<Vec<Value>> {
    if let Some(e) = v.get("enum").and_then(Value::as_array) {
        return Some(e.clone());
    }
    v.get("oneOf")?
        .as_array()?
        .iter()
        .map(|alt| alt.get("enum")?.as_array()?.first().cloned())
        .collect()
}

fn op_table(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let common = item
            .get("parameters")
            .cloned()
            .unwrap_or(Value::Array(vec![]));
        for (method, op) in item.as_object().expect("path item") {
            // `x-…` keys are extensions (`x-netapi-urls-prefix`), not operations.
            if method == "parameters" || method.starts_with("x-") {
                continue;
            }
            let mut params: Vec<String> = common
                .as_array()
                .into_iter()
                .flatten()
                .chain(op["parameters"].as_array().into_iter().flatten())
                .map(|p| resolve(doc, p))
                // OpenAPI: an absent `required` is false (dropshot leaves it out then).
                .map(|p| {
                    let required = p["required"].as_bool().unwrap_or(false);
                    format!("{} in {} required={required}", p["name"], p["in"])
                })
                .collect();
            params.sort();
            let body = body_of(
                doc,
                &op["requestBody"]["content"]["application/json"]["schema"],
            );
            let success: Vec<(String, Option<String>)> = op["responses"]
                .as_object()
                .expect("responses")
                .iter()
                .filter(|(code, _)| code.starts_with('2'))
                .map(|(code, r)| {
                    (
                        code.clone(),
                        ref_name(&r["content"]["application/json"]["schema"]),
                    )
                })
                .collect();
            out.insert(
                (path.clone(), method.clone()),
                serde_json::json!({
                    "operationId": op["operationId"],
                    "parameters": params,
                    "body": body,
                    "success": success,
                }),
            );
        }
    }
    out
}

/// A request body's JSON schema reduced to its roots: one wrapper's name, or the sorted names
/// of a choice of wrappers (the spec's inline `oneOf`; dropshot's named `anyOf`, schemars'
/// form of `netapi_chat_runtime::wire::OneOfJson`).
fn body_of(doc: &Value, schema: &Value) -> Value {
    let target = ref_name(schema).and_then(|n| doc["components"]["schemas"].get(&n));
    let choice = target
        .unwrap_or(schema)
        .get("oneOf")
        .or_else(|| target.unwrap_or(schema).get("anyOf"))
        .and_then(Value::as_array);
    match choice {
        Some(alts) => {
            // schemars writes a documented variant as `allOf: [{$ref}]`.
            let mut names: Vec<String> = alts
                .iter()
                .filter_map(|a| ref_name(a).or_else(|| ref_name(&a["allOf"][0])))
                .collect();
            names.sort();
            serde_json::json!(names)
        }
        None => serde_json::json!(ref_name(schema)),
    }
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
    {
        Some(ptr) => doc.pointer(ptr).expect("reference resolves"),
        None => v,
    }
}

#[test]
fn operations_match_the_spec() {
    let ours = op_table(&dropshot_doc());
    let spec = op_table(&published_doc());
    let ours_keys: BTreeSet<_> = ours.keys().collect();
    let spec_keys: BTreeSet<_> = spec.keys().collect();
    assert_eq!(
        ours_keys, spec_keys,
        "routes differ between the generated trait and the spec"
    );
    for (k, v) in &spec {
        assert_eq!(
            &ours[k], v,
            "operation {k:?} differs (left: dropshot, right: spec)"
        );
    }
}

#[test]
fn schemas_match_the_spec() {
    let ours = dropshot_doc();
    let spec = published_doc();
    let ours_s = ours["components"]["schemas"]
        .as_object()
        .expect("dropshot schemas");
    let spec_s = spec["components"]["schemas"]
        .as_object()
        .expect("spec schemas");
    let mut compared = 0;
    for (name, o) in ours_s {
        // Path-parameter structs are not body schemas; `Error` is dropshot's error type, which
        // the generated endpoints never return (every error goes out as a `requestError`);
        // `OneOfJson_for_…` is the choice of a `oneOf` request body, compared as the
        // operation's body (`body_of`).
        if name.ends_with("Path") || name == "Error" || name.starts_with("OneOfJson_for_") {
            continue;
        }
        let s = spec_s
            .get(name)
            .unwrap_or_else(|| panic!("dropshot has schema {name}, the spec does not"));
        if let Some(values) = s.get("enum") {
            assert_eq!(enum_values(o), values.as_array().cloned(), "enum {name}");
            compared += 1;
            continue;
        }
        let props = |doc: &Value, v: &Value| -> BTreeMap<String, String> {
            v["properties"]
                .as_object()
                .map(|m| m.iter().map(|(k, p)| (k.clone(), shape(doc, p))).collect())
                .unwrap_or_default()
        };
        let required = |v: &Value| -> BTreeSet<String> {
            v["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            props(&ours, o),
            props(&spec, s),
            "properties of {name} (left: dropshot, right: spec)"
        );
        // schemars cannot express "required list" through a lenient deserializer; compare the
        // required scalars and objects, and lists must be required on both sides or optional
        // on the dropshot side only when the spec says minItems >= 1.
        let lists: BTreeSet<String> = props(&spec, s)
            .into_iter()
            .filter(|(_, t)| t.starts_with("array"))
            .map(|(k, _)| k)
            .collect();
        let r_o: BTreeSet<_> = required(o).difference(&lists).cloned().collect();
        let r_s: BTreeSet<_> = required(s).difference(&lists).cloned().collect();
        assert_eq!(
            r_o, r_s,
            "required properties of {name} (left: dropshot, right: spec)"
        );
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} schemas compared");
}

/// `fooBarBaz` → `foo_bar_baz` (the operation ids have no acronyms).
fn snake(id: &str) -> String {
    let mut out = String::new();
    for c in id.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The naming rule (ARCHITECTURE.md, "Names"): operation `fooChatBar` is the `ChatService`
/// method `foo_chat_bar`, whose handler hands over to the chat core's `Chat::foo_bar` (the
/// word `chat` dropped: the core knows nothing else). No other name in between.
#[test]
fn handlers_follow_the_naming_rule() {
    let handlers = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/server/src/handlers.rs"
    ))
    .expect("handlers.rs");
    let published = published_doc();
    let ids: Vec<String> = published["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().expect("path item").values())
        .filter_map(|op| op.get("operationId")?.as_str().map(str::to_owned))
        .collect();
    assert!(ids.len() >= 19, "only {} operations", ids.len());
    for id in ids {
        let method = snake(&id);
        let start = handlers
            .find(&format!("async fn {method}("))
            .unwrap_or_else(|| panic!("no ChatService method `{method}` for `{id}`"));
        let body = &handlers[start + 1..];
        let body = &body[..body.find("async fn ").unwrap_or(body.len())];
        let core = method.replace("_chat_", "_");
        assert!(
            body.contains(&format!(".{core}(")),
            "`{method}` does not hand over to `Chat::{core}`"
        );
    }
}

/// Issue 18: the XML clients (the test faces, `netapi-chat client`) send each operation with
/// its generated request builder, so there must be exactly one per operation of the published
/// document, named by the naming rule, with the operation's method, and none for anything else
/// (`new` and `urls` aside).
#[test]
fn every_operation_has_one_request_builder() {
    let requests = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/generated/api/src/requests.rs"
    ))
    .expect("requests.rs");
    let published = published_doc();
    let mut operations = 0;
    for (path, item) in published["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Some(id) = op.get("operationId").and_then(Value::as_str) else {
                continue;
            };
            operations += 1;
            let name = snake(id);
            let head = format!("    pub fn {name}(");
            assert_eq!(
                requests.matches(&head).count(),
                1,
                "no single request builder `{name}` for `{id}`"
            );
            let start = requests.find(&head).expect("counted above");
            let body = &requests[start + 1..];
            let body = &body[..body.find("    pub fn ").unwrap_or(body.len())];
            let method = method.to_uppercase();
            assert!(
                body.contains(&format!("method: Method::{method},")),
                "`{name}` does not send {method} ({path})"
            );
        }
    }
    assert!(operations >= 19, "only {operations} operations");
    assert_eq!(
        requests.matches("    pub fn ").count(),
        operations + 2,
        "a request builder for something that is not an operation"
    );
}

/// Every element the published document names is the one the wire and the XSD use: its
/// property's name. OpenAPI's XML model names a property whose schema is a `$ref` after the
/// referenced schema's `xml.name` unless the property (or its `items`) says otherwise, so a
/// client generated from the document, or schemathesis, wrote `<participantInformation>`
/// where the server reads `<participant>` (and ignored it as unknown).
#[test]
fn the_published_document_names_every_element_as_the_wire_does() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/generated/openapi/chat.openapi.json"
    ))
    .expect("published document");
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    // The element name a property's (or an item's) schema gives it, if any.
    let named = |v: &Value| -> Option<String> {
        if let Some(n) = v.pointer("/xml/name").and_then(Value::as_str) {
            return Some(n.to_owned());
        }
        let target = ref_name(v)
            .or_else(|| v.pointer("/allOf/0").and_then(ref_name))
            .and_then(|r| schemas.get(&r))?;
        target
            .pointer("/xml/name")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut checked = 0;
    for (schema, s) in schemas {
        let Some(props) = s["properties"].as_object() else {
            continue;
        };
        for (prop, p) in props {
            let at = if p["type"] == "array" { &p["items"] } else { p };
            if let Some(name) = named(at) {
                assert_eq!(&name, prop, "{schema}.{prop}: named `{name}` in XML");
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "only {checked} elements checked");
}
