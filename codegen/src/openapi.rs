//! The two OpenAPI documents derived from the spec: the published one (the spec plus the
//! derived `…Root` JSON wrapper schemas), and its JSON-only projection for progenitor, which
//! refuses XML media types and has no use for callbacks.

use crate::model::{ROOT_SUFFIX, SchemaKind, Spec, StructSchema};
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
    // Every reference must resolve now.
    check_refs(&doc, &doc)?;
    let _: openapiv3::OpenAPI = serde_json::from_value(doc.clone())
        .context("the published document is not valid OpenAPI 3.0")?;
    Ok(doc)
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
