//! The two OpenAPI documents derived from the spec: the published one (the spec plus the
//! derived `…Root` JSON wrapper schemas), and its JSON-only projection for progenitor, which
//! refuses XML media types and has no use for callbacks.

use crate::model::{Card, FieldType, ROOT_SUFFIX, SchemaKind, Spec, StructSchema};
use anyhow::{Context, Result, anyhow};
use serde_json::{Map, Value, json};

/// The published document: the spec with every document root's JSON wrapper added.
pub fn published(spec: &Spec) -> Result<Value> {
    let mut doc = spec.raw.clone();
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .ok_or_else(|| anyhow!("components.schemas must be an object"))?;
    let mut wrappers = Map::new();
    for s in &spec.schemas {
        if let SchemaKind::Struct(StructSchema {
            root: Some(root), ..
        }) = &s.kind
        {
            wrappers.insert(
                format!("{}{ROOT_SUFFIX}", s.name),
                json!({
                    "description": format!(
                        "JSON form of `{}`: an object whose one key is the root element's name; \
                         any other key is refused (400).",
                        s.name
                    ),
                    "type": "object",
                    "required": [root],
                    "additionalProperties": false,
                    "properties": { root: { "$ref": format!("#/components/schemas/{}", s.name) } }
                }),
            );
        }
    }
    schemas.extend(wrappers);
    name_elements(spec, schemas);
    // Every reference must resolve now.
    check_refs(&doc, &doc)?;
    let _: openapiv3::OpenAPI = serde_json::from_value(doc.clone())
        .context("the published document is not valid OpenAPI 3.0")?;
    Ok(doc)
}

/// Gives the element name to every property (or list item) whose schema is a document root
/// of another name: `participant` items are `ParticipantInformation`s, whose root element is
/// `participantInformation`. OpenAPI's XML model names an element after the referenced
/// schema's `xml.name` unless the property says otherwise, and a `$ref`'s siblings are
/// ignored, so the reference goes into a one-member `allOf` beside `xml: {name}`. Without it,
/// a client generated from the published document (or schemathesis) wrote
/// `<participantInformation>` where the wire and the XSD say `<participant>`, and the server
/// ignored it as an unknown element. The JSON-only projection takes the wrapper off again
/// ([`json_only`]).
fn name_elements(spec: &Spec, schemas: &mut Map<String, Value>) {
    let root_of = |name: &str| match spec.schema(name).map(|s| &s.kind) {
        Some(SchemaKind::Struct(StructSchema { root, .. })) => root.clone(),
        _ => None,
    };
    for s in &spec.schemas {
        let SchemaKind::Struct(st) = &s.kind else {
            continue;
        };
        if st.bare_list {
            continue;
        }
        for f in st.fields.iter().filter(|f| !f.attribute) {
            let FieldType::Named(target) = &f.ty else {
                continue;
            };
            if root_of(target).is_none_or(|root| root == f.name) {
                continue;
            }
            let Some(prop) = schemas
                .get_mut(&s.name)
                .and_then(|v| v.pointer_mut(&format!("/properties/{}", f.name)))
            else {
                continue;
            };
            let at = match f.card {
                Card::List { .. } => prop.get_mut("items"),
                Card::Required | Card::Optional => Some(prop),
            };
            if let Some(at) = at
                && let Some(reference) = at.get("$ref").cloned()
            {
                let mut named =
                    json!({ "allOf": [{ "$ref": reference }], "xml": { "name": f.name } });
                if let (Some(d), Some(m)) = (at.get("description").cloned(), named.as_object_mut())
                {
                    m.insert("description".to_owned(), d);
                }
                *at = named;
            }
        }
    }
}

fn check_refs(doc: &Value, v: &Value) -> Result<()> {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let ptr = r
                    .strip_prefix('#')
                    .ok_or_else(|| anyhow!("only local references are supported: `{r}`"))?;
                if doc.pointer(ptr).is_none() {
                    return Err(anyhow!("reference `{r}` does not resolve"));
                }
            }
            m.values().try_for_each(|x| check_refs(doc, x))
        }
        Value::Array(a) => a.iter().try_for_each(|x| check_refs(doc, x)),
        _ => Ok(()),
    }
}

/// The JSON-only projection progenitor reads: no `application/xml`, no callbacks.
pub fn json_only(published: &Value) -> Value {
    let mut doc = published.clone();
    strip(&mut doc);
    doc
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(m) => {
            // An element's name ([`name_elements`]) means nothing to JSON: the reference alone.
            if m.contains_key("xml")
                && let Some(Value::Array(all)) = m.get("allOf")
                && let [only] = all.as_slice()
            {
                let only = only.clone();
                m.remove("allOf");
                m.remove("xml");
                if let Value::Object(r) = only {
                    m.extend(r);
                }
            }
            m.remove("callbacks");
            if let Some(Value::Object(content)) = m.get_mut("content") {
                content.retain(|k, _| k == "application/json");
            }
            m.values_mut().for_each(strip);
        }
        Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}
