//! The spec read into the few shapes codegen needs: schemas (structs and enums, with their XML
//! facts), and operations (path, verb, parameters, body, answer).
//!
//! openapiv3 drops the OpenAPI `xml` object, so the spec is walked as `serde_json::Value` (with
//! key order preserved: property order is the XSD sequence order). Every inconsistency is an
//! error that names the place in the spec.

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Map, Value};

/// Suffix of the derived JSON wrapper schemas (`ChatMessage` → `ChatMessageRoot`).
pub const ROOT_SUFFIX: &str = "Root";

/// The name of the one field a list schema is read as (`NotificationList::items`).
pub const BARE_LIST_FIELD: &str = "items";

/// The whole spec, resolved.
#[derive(Debug)]
pub struct Spec {
    /// The raw document, as written (YAML read into JSON values).
    pub raw: Value,
    /// Component schemas, in spec order.
    pub schemas: Vec<Schema>,
    /// Operations, in spec order.
    pub operations: Vec<Operation>,
    /// The path parameter naming the user a request acts for (`x-netapi-acting-user`), when
    /// the API requires credentials (top-level `security`): its value is authorized against
    /// the credentials before any handler runs.
    pub acting_user: Option<String>,
    /// Root schemas a callback may carry (the `oneOf` of the callbacks' XML request bodies),
    /// in spec order: the notifications.
    pub notifications: Vec<String>,
}

/// A component schema.
#[derive(Debug)]
pub struct Schema {
    pub name: String,
    pub description: Option<String>,
    pub namespace: String,
    pub prefix: String,
    pub kind: SchemaKind,
}

#[derive(Debug)]
pub enum SchemaKind {
    Enum(Vec<String>),
    Struct(StructSchema),
}

#[derive(Debug)]
pub struct StructSchema {
    /// XML root element name, for document roots.
    pub root: Option<String>,
    pub fields: Vec<Field>,
    /// Properties of which exactly one must be present (`x-oma-choice`, an `xsd:choice`).
    pub choice: Vec<String>,
    /// A list schema (`type: array`, OMA's `NotificationList`): a document that is a list
    /// with no element of its own around each item, read as a struct of one list field,
    /// [`BARE_LIST_FIELD`]. Its items are a choice whose members are document roots: in JSON
    /// the document is the array (each item a single-key object), in XML each item is its
    /// member's own root element, in the member's namespace.
    pub bare_list: bool,
    /// `x-oma-xsi-type`: the concrete OMA type this schema is written as in XML, where OMA's
    /// schema declares the element with an abstract base (`channelData` is an abstract
    /// `ChannelData`; an XSD-bound client needs `xsi:type="nc:LongPollingData"` to read it).
    /// XML only: JSON drops `xsi:type` (reference §2.1).
    pub xsi_type: Option<String>,
}

/// A property of a struct schema.
#[derive(Debug, Clone)]
pub struct Field {
    /// The wire name (JSON key, XML element or attribute).
    pub name: String,
    pub description: Option<String>,
    pub ty: FieldType,
    pub card: Card,
    pub attribute: bool,
    /// `maxLength` of a string (of each item, for a list of strings), in characters: what the
    /// generated validation enforces on both faces and the XSD publishes as `xsd:maxLength`.
    pub max_length: Option<u64>,
    /// `x-empty-array: true` on a list: JSON writes it `[]` when empty instead of leaving the
    /// key out (structure-aware JSON, reference §5.3 B), for the lists a client iterates (the
    /// entries of a list resource). Other lists, some of which only one face fills, are left
    /// out when empty, so a face never shows a member its types do not have.
    pub empty_array: bool,
}

/// What a field holds.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    String,
    /// A string holding an RFC 3339 date-time (`format: date-time`; OMA's `xsd:dateTime`):
    /// a `String` in Rust (its form checked by the core where a client's value is used),
    /// `xsd:dateTime` in the XSD and a typed date-time in a client generated from the
    /// published document.
    DateTime,
    Bool,
    Int64,
    /// A component schema (enum or struct), by name.
    Named(String),
}

/// How many times a field appears.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Card {
    Required,
    Optional,
    /// Repeated; `min` is the minimum count (0 or 1).
    List {
        min: u64,
    },
}

/// An HTTP operation of the API.
#[derive(Debug)]
pub struct Operation {
    pub id: String,
    pub method: String,
    pub path: String,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// Path parameters, in path order.
    pub path_params: Vec<String>,
    /// Query parameters, in declaration order (path level, then operation level).
    pub query_params: Vec<QueryParam>,
    /// Root schema (the XML form) of the request body, or the two roots of a `oneOf` body
    /// (read as `netapi_chat_runtime::wire::OneOf`).
    pub body: Option<Vec<String>>,
    /// Whether the body may be left out (`requestBody.required: false`): the implementation
    /// then gets `None` for a request that sends no body at all.
    pub body_optional: bool,
    /// The success status (200, 201 or 204).
    pub success: u16,
    /// Root schema (the XML form) of the success body.
    pub response: Option<String>,
    /// Headers the success response declares, other than `Location` (which a 201 always
    /// carries): the service returns them with the body.
    pub response_headers: Vec<ResponseHeader>,
}

/// A query parameter: always optional (a client written before it existed must keep working),
/// with an optional default the generated code fills in and bounds it checks.
#[derive(Debug, Clone)]
pub struct QueryParam {
    pub name: String,
    pub description: Option<String>,
    /// `String` or `Int64`.
    pub ty: FieldType,
    /// `schema.default` of an integer parameter: the value the service gets when it is absent.
    pub default: Option<i64>,
    /// `schema.minimum` / `schema.maximum` of an integer parameter.
    pub minimum: Option<i64>,
    pub maximum: Option<i64>,
    /// `schema.maxLength` of a string parameter, in characters.
    pub max_length: Option<u64>,
}

/// A header of a success response (e.g. `Link`), always optional, a string.
#[derive(Debug, Clone)]
pub struct ResponseHeader {
    /// The header name as the spec writes it.
    pub name: String,
    pub description: Option<String>,
}

impl Spec {
    /// Parses the spec text (YAML or JSON) and checks its internal consistency.
    pub fn parse(text: &str) -> Result<Spec> {
        let raw: Value = serde_yaml::from_str(text).context("spec is not valid YAML")?;
        let version = raw["openapi"].as_str().unwrap_or_default();
        ensure!(
            version.starts_with("3.0."),
            "spec must be OpenAPI 3.0.x (progenitor and openapiv3 read 3.0 only), found `{version}`"
        );
        let schemas = parse_schemas(&raw)?;
        let operations = parse_operations(&raw, &schemas)?;
        let secured = raw["security"].as_array().is_some_and(|a| !a.is_empty());
        let acting_user = self::text(&raw, "x-netapi-acting-user");
        ensure!(
            secured == acting_user.is_some(),
            "a spec with top-level `security` must name its acting-user path parameter in \
             `x-netapi-acting-user` (and only such a spec)"
        );
        if let Some(param) = &acting_user {
            for op in &operations {
                ensure!(
                    op.path_params.contains(param),
                    "{}: path has no `{param}` parameter (x-netapi-acting-user)",
                    op.id
                );
            }
        }
        let notifications = parse_notifications(&raw, &schemas)?;
        Ok(Spec {
            raw,
            schemas,
            operations,
            acting_user,
            notifications,
        })
    }

    /// Looks a schema up by name.
    pub fn schema(&self, name: &str) -> Option<&Schema> {
        self.schemas.iter().find(|s| s.name == name)
    }

    /// The root element name of a root schema.
    pub fn root_name(&self, name: &str) -> Option<&str> {
        match &self.schema(name)?.kind {
            SchemaKind::Struct(s) => s.root.as_deref(),
            SchemaKind::Enum(_) => None,
        }
    }
}

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| anyhow!("{what} must be an object"))
}

/// The `maxLength` of `schema` (a property's, or its items' for a list, or a query
/// parameter's), checked: a non-negative integer, on a string only. One reading for properties
/// and query parameters, so that both refuse the same spec errors; `what` names the place
/// in the error.
fn max_length(schema: &Value, ty: &FieldType, what: &str) -> Result<Option<u64>> {
    let Some(v) = schema.get("maxLength") else {
        return Ok(None);
    };
    let n = v
        .as_u64()
        .ok_or_else(|| anyhow!("{what}: maxLength must be a non-negative integer"))?;
    ensure!(
        matches!(ty, FieldType::String | FieldType::DateTime),
        "{what}: maxLength is only supported on strings"
    );
    Ok(Some(n))
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(|s| s.trim_end().to_owned())
}

fn ref_name(v: &Value) -> Option<&str> {
    v.get("$ref")?
        .as_str()?
        .strip_prefix("#/components/schemas/")
}

fn parse_schemas(raw: &Value) -> Result<Vec<Schema>> {
    let schemas = obj(&raw["components"]["schemas"], "components.schemas")?;
    let mut out = Vec::new();
    for (name, s) in schemas {
        ensure!(
            !name.ends_with(ROOT_SUFFIX),
            "schema `{name}`: names ending in `{ROOT_SUFFIX}` are reserved for the JSON wrappers codegen derives"
        );
        let xml = &s["xml"];
        let namespace = text(xml, "namespace").ok_or_else(|| {
            anyhow!("schema `{name}` needs `xml.namespace` (its XSD target namespace)")
        })?;
        let prefix =
            text(xml, "prefix").ok_or_else(|| anyhow!("schema `{name}` needs `xml.prefix`"))?;
        let description = text(s, "description");
        let kind = match s["type"].as_str() {
            Some("string") => {
                let values = s["enum"]
                    .as_array()
                    .ok_or_else(|| anyhow!("schema `{name}`: a string schema must be an enum"))?
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| anyhow!("schema `{name}`: enum values must be strings"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                SchemaKind::Enum(values)
            }
            Some("object") => SchemaKind::Struct(parse_struct(name, s)?),
            Some("array") => SchemaKind::Struct(parse_bare_list(name, s)?),
            other => bail!("schema `{name}`: unsupported type {other:?}"),
        };
        out.push(Schema {
            name: name.clone(),
            description,
            namespace,
            prefix,
            kind,
        });
    }
    // Every named field type must exist.
    for s in &out {
        if let SchemaKind::Struct(st) = &s.kind {
            for f in &st.fields {
                if let FieldType::Named(n) = &f.ty {
                    ensure!(
                        out.iter().any(|o| &o.name == n),
                        "schema `{}` property `{}` refers to unknown schema `{n}`",
                        s.name,
                        f.name
                    );
                }
            }
            if st.bare_list {
                check_bare_list(&out, &s.name, st)?;
            }
        }
    }
    Ok(out)
}

/// The struct schema called `name` in `schemas`, if there is one.
fn struct_schema<'a>(schemas: &'a [Schema], name: &str) -> Option<&'a StructSchema> {
    schemas.iter().find_map(|o| match &o.kind {
        SchemaKind::Struct(st) if o.name == name => Some(st),
        _ => None,
    })
}

/// A list schema is what its writers assume: a list of a choice schema every property of which
/// is a member, each member a document root named as the member (so that the item's XML
/// element is the member's own root element).
fn check_bare_list(schemas: &[Schema], name: &str, st: &StructSchema) -> Result<()> {
    let [
        Field {
            ty: FieldType::Named(item),
            ..
        },
    ] = st.fields.as_slice()
    else {
        bail!("schema `{name}`: a list schema is read as one list of a schema");
    };
    let item_st = struct_schema(schemas, item)
        .ok_or_else(|| anyhow!("schema `{name}`: `{item}` is not an object schema"))?;
    ensure!(
        !item_st.fields.is_empty()
            && item_st
                .fields
                .iter()
                .all(|f| item_st.choice.contains(&f.name)),
        "schema `{name}`: every property of its item `{item}` is an x-oma-choice member"
    );
    for f in &item_st.fields {
        let FieldType::Named(member) = &f.ty else {
            bail!(
                "schema `{item}`: bare-list member `{}` is not a schema",
                f.name
            );
        };
        let root = struct_schema(schemas, member).and_then(|m| m.root.as_deref());
        ensure!(
            root == Some(f.name.as_str()),
            "schema `{item}`: bare-list member `{}` must be a document root named `{}`",
            f.name,
            f.name
        );
    }
    Ok(())
}

fn parse_struct(name: &str, s: &Value) -> Result<StructSchema> {
    let required: Vec<&str> = s["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let props = obj(&s["properties"], &format!("schema `{name}` properties"))?;
    for r in &required {
        ensure!(
            props.contains_key(*r),
            "schema `{name}` requires `{r}`, which is not a property"
        );
    }
    let mut fields = Vec::new();
    for (pname, p) in props {
        let (ty, card) = if p["type"].as_str() == Some("array") {
            let min = p["minItems"].as_u64().unwrap_or(0);
            ensure!(
                min <= 1,
                "schema `{name}` property `{pname}`: minItems > 1 is not supported"
            );
            let min = if required.contains(&pname.as_str()) {
                min.max(1)
            } else {
                min
            };
            (leaf_type(name, pname, &p["items"])?, Card::List { min })
        } else {
            let card = if required.contains(&pname.as_str()) {
                Card::Required
            } else {
                Card::Optional
            };
            (leaf_type(name, pname, p)?, card)
        };
        let attribute = p["xml"]["attribute"].as_bool().unwrap_or(false);
        if attribute {
            ensure!(
                !matches!(card, Card::List { .. }) && !matches!(ty, FieldType::Named(_)),
                "schema `{name}` property `{pname}`: an XML attribute must be a single scalar"
            );
        }
        let leaf = if matches!(card, Card::List { .. }) {
            &p["items"]
        } else {
            p
        };
        let max_length = max_length(leaf, &ty, &format!("schema `{name}` property `{pname}`"))?;
        let empty_array = p["x-empty-array"].as_bool().unwrap_or(false);
        ensure!(
            !empty_array || matches!(card, Card::List { .. }),
            "schema `{name}` property `{pname}`: x-empty-array is for lists"
        );
        fields.push(Field {
            name: pname.clone(),
            description: text(p, "description"),
            ty,
            card,
            attribute,
            max_length,
            empty_array,
        });
    }
    let choice: Vec<String> = s["x-oma-choice"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for c in &choice {
        let f = fields
            .iter()
            .find(|f| &f.name == c)
            .ok_or_else(|| anyhow!("schema `{name}`: x-oma-choice names unknown property `{c}`"))?;
        ensure!(
            f.card == Card::Optional,
            "schema `{name}`: choice member `{c}` must be optional"
        );
    }
    // Attributes first, then elements: keeps XML writing and the XSD simple.
    let root = text(&s["xml"], "name");
    Ok(StructSchema {
        root,
        fields,
        choice,
        bare_list: false,
        xsi_type: text(s, "x-oma-xsi-type"),
    })
}

/// A list schema: a document root whose items are a schema (checked further by
/// [`check_bare_list`] once every schema is read).
fn parse_bare_list(name: &str, s: &Value) -> Result<StructSchema> {
    let item = ref_name(&s["items"])
        .ok_or_else(|| anyhow!("schema `{name}`: a list schema's items must be a $ref"))?;
    let root = text(&s["xml"], "name")
        .ok_or_else(|| anyhow!("schema `{name}`: a list schema is a document root (xml.name)"))?;
    ensure!(
        s["xml"]["wrapped"].as_bool() == Some(true),
        "schema `{name}`: a list schema's XML is its root element around the items (xml.wrapped: true)"
    );
    Ok(StructSchema {
        root: Some(root),
        fields: vec![Field {
            name: BARE_LIST_FIELD.to_owned(),
            description: None,
            ty: FieldType::Named(item.to_owned()),
            card: Card::List { min: 0 },
            attribute: false,
            max_length: None,
            empty_array: false,
        }],
        choice: Vec::new(),
        bare_list: true,
        xsi_type: None,
    })
}

/// The type of property `prop` of `schema` (or of its items): a `$ref`, or a string (with
/// `format: date-time`, a [`FieldType::DateTime`]), boolean or integer.
fn leaf_type(schema: &str, prop: &str, p: &Value) -> Result<FieldType> {
    if let Some(r) = ref_name(p) {
        return Ok(FieldType::Named(r.to_owned()));
    }
    Ok(match p["type"].as_str() {
        Some("string") => {
            ensure!(
                p.get("enum").is_none(),
                "schema `{schema}` property `{prop}`: put enums in a component schema"
            );
            match p["format"].as_str() {
                None => FieldType::String,
                Some("date-time") => FieldType::DateTime,
                // A format codegen does not know would be published with nothing behind it.
                Some(other) => bail!(
                    "schema `{schema}` property `{prop}`: unsupported string format {other:?} \
                     (only `date-time`)"
                ),
            }
        }
        Some("boolean") => FieldType::Bool,
        Some("integer") => FieldType::Int64,
        other => bail!("schema `{schema}` property `{prop}`: unsupported type {other:?}"),
    })
}

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn parse_operations(raw: &Value, schemas: &[Schema]) -> Result<Vec<Operation>> {
    let paths = obj(&raw["paths"], "paths")?;
    let mut out = Vec::new();
    for (path, item) in paths {
        let path_params: Vec<String> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        // Declared parameters (path level + operation level) must match the template.
        let mut declared = param_names(raw, &item["parameters"])?;
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = text(op, "operationId")
                .ok_or_else(|| anyhow!("{method} {path} has no operationId"))?;
            let mut names = declared.clone();
            names.extend(param_names(raw, &op["parameters"])?);
            let mut query_params = query_params(raw, &item["parameters"])?;
            query_params.extend(query_params_of(raw, &op["parameters"], &id)?);
            let mut sorted_names = names.clone();
            sorted_names.sort();
            let mut sorted_params = path_params.clone();
            sorted_params.sort();
            ensure!(
                sorted_names == sorted_params,
                "{id}: declared path parameters {names:?} differ from the template's {path_params:?}"
            );
            let body = match op.get("requestBody") {
                None => None,
                Some(rb) => Some(body_roots(
                    &rb["content"],
                    schemas,
                    &format!("{id} request body"),
                )?),
            };
            // OpenAPI's default is `false`; a body is optional only where the spec says so.
            let body_optional = match op.get("requestBody").map(|rb| &rb["required"]) {
                None => false,
                Some(Value::Bool(required)) => !required,
                Some(_) => bail!("{id}: requestBody must say `required: true` or `false`"),
            };
            let responses = obj(&op["responses"], &format!("{id} responses"))?;
            let mut success = None;
            for (code, resp) in responses {
                let Ok(code) = code.parse::<u16>() else {
                    continue;
                };
                if !(200..300).contains(&code) {
                    continue;
                }
                ensure!(success.is_none(), "{id}: more than one success response");
                let schema = match resp.get("content") {
                    None => None,
                    Some(c) => Some(media_pair(c, schemas, &format!("{id} response {code}"))?),
                };
                ensure!(
                    (code == 204) == schema.is_none(),
                    "{id}: response {code} {} a body",
                    if code == 204 {
                        "must not have"
                    } else {
                        "must have"
                    }
                );
                let headers = response_headers(raw, resp, &format!("{id} response {code}"))?;
                success = Some((code, schema, headers));
            }
            let (success, response, response_headers) =
                success.ok_or_else(|| anyhow!("{id}: no 2xx response"))?;
            ensure!(
                response_headers.is_empty() || (success == 200 && response.is_some()),
                "{id}: response headers are only supported on a 200 response with a body"
            );
            ensure!(
                matches!(success, 200 | 201 | 204),
                "{id}: success status {success} is not one of 200, 201, 204"
            );
            out.push(Operation {
                id,
                method: method.to_uppercase(),
                path: path.clone(),
                summary: text(op, "summary"),
                description: text(op, "description"),
                tags: op["tags"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                path_params: path_params.clone(),
                query_params,
                body,
                body_optional,
                success,
                response,
                response_headers,
            });
        }
        declared.clear();
    }
    let mut ids: Vec<&str> = out.iter().map(|o| o.id.as_str()).collect();
    ids.sort();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        bail!("operationId `{}` is used twice", w[0]);
    }
    Ok(out)
}

/// The declared parameters of a `parameters` list, references resolved.
fn resolved_params<'a>(raw: &'a Value, params: &'a Value) -> Result<Vec<&'a Value>> {
    let Some(list) = params.as_array() else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|p| match p.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let key = r
                    .strip_prefix("#/components/parameters/")
                    .ok_or_else(|| anyhow!("unsupported parameter reference `{r}`"))?;
                let p = &raw["components"]["parameters"][key];
                ensure!(p.is_object(), "parameter reference `{r}` names nothing");
                Ok(p)
            }
            None => Ok(p),
        })
        .collect()
}

/// The names of the path parameters of a `parameters` list.
fn param_names(raw: &Value, params: &Value) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in resolved_params(raw, params)? {
        let name = text(p, "name").ok_or_else(|| anyhow!("a parameter has no name"))?;
        match p["in"].as_str() {
            Some("path") => out.push(name),
            Some("query") => {}
            other => bail!(
                "parameter `{name}`: only path and query parameters are supported, not {other:?}"
            ),
        }
    }
    Ok(out)
}

/// The query parameters of a path item's `parameters` list.
fn query_params(raw: &Value, params: &Value) -> Result<Vec<QueryParam>> {
    query_params_of(raw, params, "path item")
}

/// The query parameters of a `parameters` list: optional, `string` or `integer`.
fn query_params_of(raw: &Value, params: &Value, what: &str) -> Result<Vec<QueryParam>> {
    let mut out = Vec::new();
    for p in resolved_params(raw, params)? {
        if p["in"].as_str() != Some("query") {
            continue;
        }
        let name = text(p, "name").ok_or_else(|| anyhow!("{what}: a parameter has no name"))?;
        ensure!(
            p["required"].as_bool() != Some(true),
            "{what}: query parameter `{name}` must be optional (a client that does not know it \
             must keep working)"
        );
        let schema = &p["schema"];
        let ty = match schema["type"].as_str() {
            // No format: a query parameter is handed to the handler as its text, unchecked.
            Some("string") if schema.get("format").is_none() => FieldType::String,
            Some("string") => bail!(
                "{what}: query parameter `{name}`: a string format would be published with \
                 nothing behind it (a query parameter is handed over as its text)"
            ),
            Some("integer") => FieldType::Int64,
            other => bail!("{what}: query parameter `{name}`: unsupported type {other:?}"),
        };
        let int = |key: &str| -> Result<Option<i64>> {
            match schema.get(key) {
                None => Ok(None),
                Some(v) => {
                    ensure!(
                        ty == FieldType::Int64,
                        "{what}: query parameter `{name}`: `{key}` is only supported on integers"
                    );
                    v.as_i64().map(Some).ok_or_else(|| {
                        anyhow!("{what}: query parameter `{name}`: `{key}` must be an integer")
                    })
                }
            }
        };
        let (default, minimum, maximum) = (int("default")?, int("minimum")?, int("maximum")?);
        if let Some(d) = default {
            ensure!(
                minimum.is_none_or(|m| d >= m) && maximum.is_none_or(|m| d <= m),
                "{what}: query parameter `{name}`: default {d} is out of its bounds"
            );
        }
        let max_length = max_length(schema, &ty, &format!("{what}: query parameter `{name}`"))?;
        out.push(QueryParam {
            name,
            description: text(p, "description"),
            ty,
            default,
            minimum,
            maximum,
            max_length,
        });
    }
    Ok(out)
}

/// The headers a success response declares, `Location` aside (codegen answers it for 201).
fn response_headers(raw: &Value, resp: &Value, what: &str) -> Result<Vec<ResponseHeader>> {
    let Some(headers) = resp.get("headers") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, h) in obj(headers, &format!("{what} headers"))? {
        if name.eq_ignore_ascii_case("location") {
            continue;
        }
        ensure!(
            http_token(name),
            "{what}: header name `{name}` is not an HTTP token"
        );
        let h = match h.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let key = r
                    .strip_prefix("#/components/headers/")
                    .ok_or_else(|| anyhow!("{what}: unsupported header reference `{r}`"))?;
                &raw["components"]["headers"][key]
            }
            None => h,
        };
        out.push(ResponseHeader {
            name: name.clone(),
            description: text(h, "description"),
        });
    }
    Ok(out)
}

/// Whether `name` is a valid HTTP header name (RFC 9110 token).
fn http_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks that a `content` map offers the JSON wrapper and the XML root of the same schema, and
/// returns the root schema's name.
fn media_pair(content: &Value, schemas: &[Schema], what: &str) -> Result<String> {
    let json = ref_name(&content["application/json"]["schema"])
        .ok_or_else(|| anyhow!("{what}: application/json must `$ref` a `…{ROOT_SUFFIX}` schema"))?;
    let xml = ref_name(&content["application/xml"]["schema"])
        .ok_or_else(|| anyhow!("{what}: application/xml must `$ref` a root schema"))?;
    ensure!(
        json == format!("{xml}{ROOT_SUFFIX}"),
        "{what}: JSON schema `{json}` is not the wrapper of XML schema `{xml}` (expected `{xml}{ROOT_SUFFIX}`)"
    );
    let schema = schemas
        .iter()
        .find(|s| s.name == xml)
        .ok_or_else(|| anyhow!("{what}: unknown schema `{xml}`"))?;
    ensure!(
        matches!(&schema.kind, SchemaKind::Struct(s) if s.root.is_some()),
        "{what}: schema `{xml}` is not a document root (it needs `xml.name`)"
    );
    Ok(xml.to_owned())
}

/// The roots of a request body: one (`media_pair`), or two written as a `oneOf` in both media
/// types, pairwise (the JSON alternative `i` the wrapper of the XML alternative `i`), which the
/// generated endpoint reads as one of the two by the root element's name.
fn body_roots(content: &Value, schemas: &[Schema], what: &str) -> Result<Vec<String>> {
    let (Some(json), Some(xml)) = (
        content["application/json"]["schema"]["oneOf"].as_array(),
        content["application/xml"]["schema"]["oneOf"].as_array(),
    ) else {
        return Ok(vec![media_pair(content, schemas, what)?]);
    };
    ensure!(
        json.len() == 2 && xml.len() == 2,
        "{what}: a `oneOf` body must offer exactly two roots in each media type"
    );
    let mut out = Vec::new();
    for (j, x) in json.iter().zip(xml) {
        let pair = serde_json::json!({
            "application/json": { "schema": j },
            "application/xml": { "schema": x },
        });
        out.push(media_pair(&pair, schemas, what)?);
    }
    ensure!(
        out[0] != out[1],
        "{what}: the two roots of a `oneOf` body must differ"
    );
    Ok(out)
}

/// The notification schemas: every `oneOf` member of a callback's XML request body. Each must be
/// a document root with an optional `callbackData` string (the server echoes the subscription's).
fn parse_notifications(raw: &Value, schemas: &[Schema]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for item in raw["paths"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for method in METHODS {
            let Some(callbacks) = item
                .get(method)
                .and_then(|op| op.get("callbacks"))
                .and_then(Value::as_object)
            else {
                continue;
            };
            for (name, cb) in callbacks {
                for expr in cb.as_object().into_iter().flat_map(|m| m.values()) {
                    let alts = expr["post"]["requestBody"]["content"]["application/xml"]["schema"]["oneOf"]
                        .as_array()
                        .ok_or_else(|| anyhow!("callback `{name}`: the XML request body must be a `oneOf` of notification roots"))?;
                    for alt in alts {
                        let n = ref_name(alt).ok_or_else(|| {
                            anyhow!("callback `{name}`: oneOf members must be `$ref`s")
                        })?;
                        let ok = schemas.iter().any(|s| {
                            s.name == n
                                && matches!(&s.kind, SchemaKind::Struct(st) if st.root.is_some()
                                    && st.fields.iter().any(|f| f.name == "callbackData"
                                        && f.ty == FieldType::String && f.card == Card::Optional))
                        });
                        ensure!(
                            ok,
                            "callback `{name}`: `{n}` must be a document root with an optional string `callbackData`"
                        );
                        if !out.iter().any(|o| o == n) {
                            out.push(n.to_owned());
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}
