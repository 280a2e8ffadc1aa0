//! Sourcegen tests (rust-analyzer style): `generated/` must be exactly what `spec/` generates,
//! and a spec edit must reach every generated artefact.

use netapi_chat_codegen::{GeneratedFile, fingerprint, generate, read_spec, stale, write};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn file<'a>(files: &'a [GeneratedFile], path: &str) -> &'a str {
    &files
        .iter()
        .find(|f| f.path == Path::new(path))
        .unwrap_or_else(|| panic!("{path} is not generated"))
        .contents
}

#[test]
fn generated_matches_spec() {
    let root = workspace();
    let files = generate(&read_spec(&root).unwrap()).unwrap();
    let stale = stale(&root, &files);
    assert!(
        stale.is_empty(),
        "generated/ is out of date with spec/ ({stale:?}).\nRun `cargo xtask codegen` and commit spec/ and generated/ together."
    );
}

#[test]
fn generation_is_deterministic() {
    let spec = read_spec(&workspace()).unwrap();
    assert_eq!(generate(&spec).unwrap(), generate(&spec).unwrap());
}

/// Only the spec's operations are routed: a method a known path does not have is answered by
/// the server's request gate (`server/src/gate.rs`), so codegen emits no unpublished endpoints.
#[test]
fn only_the_specs_operations_are_routed() {
    let files = generate(&read_spec(&workspace()).unwrap()).unwrap();
    let api = file(&files, "generated/api/src/api.rs");
    let published: serde_json::Value =
        serde_json::from_str(file(&files, "generated/openapi/chat.openapi.json")).unwrap();
    let operations = published["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().keys())
        // Path-item extensions (`x-netapi-urls-prefix`) are not operations.
        .filter(|k| *k != "parameters" && !k.starts_with("x-"))
        .count();
    assert!(operations >= 19, "only {operations} operations");
    assert_eq!(api.matches("#[endpoint").count(), operations);
    assert_eq!(api.matches("operation_id = ").count(), operations);
    assert!(
        !api.contains("unpublished"),
        "an unpublished endpoint is generated"
    );
    assert!(!api.contains("method_not_allowed"));
}

/// The spec with one more optional property on `ChatMessage`, right after `text`.
fn spec_with_extra_property() -> String {
    spec_with_property("type: string")
}

/// The spec with a `deliveryNote` property of the given schema lines after `ChatMessage.text`.
fn spec_with_property(schema: &str) -> String {
    let spec = read_spec(&workspace()).unwrap();
    let anchor = "          type: string\n        successReport:";
    assert!(
        spec.contains(anchor),
        "ChatMessage's properties moved; update this test's anchor"
    );
    spec.replacen(
        anchor,
        &format!(
            "          type: string\n        deliveryNote:\n          description: A scratch property added by the test.\n          {schema}\n        successReport:"
        ),
        1,
    )
}

/// Issue 11 item 6: a `maxLength` is one fact in the spec; codegen enforces it in the
/// generated validation (which both faces run) and publishes it in the OpenAPI document, the
/// XSD (`xsd:maxLength`) and the client (a length-checked newtype).
#[test]
fn a_max_length_reaches_validation_openapi_xsd_and_client() {
    let files = generate(&spec_with_property("type: string\n          maxLength: 7")).unwrap();
    let types = file(&files, "generated/api/src/types.rs");
    assert!(
        types.contains("check_string(\"deliveryNote\", v, 7)"),
        "validation does not enforce it"
    );
    let published: serde_json::Value =
        serde_json::from_str(file(&files, "generated/openapi/chat.openapi.json")).unwrap();
    assert_eq!(
        published["components"]["schemas"]["ChatMessage"]["properties"]["deliveryNote"]["maxLength"],
        7
    );
    let xsd = file(&files, "generated/xsd/rest_netapi_chat-v1_0.xsd");
    assert!(
        xsd.contains(
            r#"<xsd:element name="deliveryNote" minOccurs="0">
        <xsd:annotation>
          <xsd:documentation>
            A scratch property added by the test.
          </xsd:documentation>
        </xsd:annotation>
        <xsd:simpleType>
          <xsd:restriction base="xsd:string">
            <xsd:maxLength value="7"/>"#
        ),
        "XSD lacks the facet:\n{xsd}"
    );
    let client = file(&files, "generated/client/src/lib.rs");
    assert!(
        client.contains("pub struct ChatMessageDeliveryNote("),
        "client has no length-checked type"
    );
}

#[test]
fn an_added_optional_property_reaches_type_openapi_xsd_and_client() {
    let files = generate(&spec_with_extra_property()).unwrap();

    let types = file(&files, "generated/api/src/types.rs");
    assert!(
        types.contains("pub delivery_note: Option<String>"),
        "type lacks the new field"
    );
    assert!(
        types.contains("rename = \"deliveryNote\""),
        "serde name missing"
    );
    assert!(
        types.contains("e.optional_leaf(\"deliveryNote\")"),
        "XML reader misses it"
    );

    let published: serde_json::Value =
        serde_json::from_str(file(&files, "generated/openapi/chat.openapi.json")).unwrap();
    assert_eq!(
        published["components"]["schemas"]["ChatMessage"]["properties"]["deliveryNote"]["type"],
        "string",
        "the served OpenAPI (generated/openapi/chat.openapi.json, include_str!'d by the server) lacks it"
    );
    let required = published["components"]["schemas"]["ChatMessage"]["required"]
        .as_array()
        .unwrap();
    assert!(!required.iter().any(|r| r == "deliveryNote"));

    let xsd = file(&files, "generated/xsd/rest_netapi_chat-v1_0.xsd");
    assert!(
        xsd.contains(
            r#"<xsd:element name="deliveryNote" type="xsd:string" minOccurs="0">
        <xsd:annotation>
          <xsd:documentation>
            A scratch property added by the test.
          </xsd:documentation>
        </xsd:annotation>
      </xsd:element>"#
        ),
        "XSD lacks the element, documented"
    );
    let chat_message = &xsd[xsd
        .find(r#"<xsd:complexType name="ChatMessage">"#)
        .expect("ChatMessage in the XSD")..];
    let at = |element: &str| {
        chat_message
            .find(&format!(r#"<xsd:element name="{element}""#))
            .unwrap_or_else(|| panic!("no {element} in ChatMessage"))
    };
    assert!(
        at("text") < at("deliveryNote") && at("deliveryNote") < at("successReport"),
        "XSD has the element out of the sequence's order"
    );

    let client = file(&files, "generated/client/src/lib.rs");
    assert!(
        client.contains("pub delivery_note: ::std::option::Option<::std::string::String>"),
        "progenitor client lacks it"
    );
}

#[test]
fn check_fails_after_a_spec_edit_until_codegen_runs() {
    // A scratch copy of the workspace's spec and generated files.
    let scratch =
        std::env::temp_dir().join(format!("netapi-chat-sourcegen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let original = generate(&read_spec(&workspace()).unwrap()).unwrap();
    write(&scratch, &original).unwrap();
    assert!(stale(&scratch, &original).is_empty());

    let edited_spec = spec_with_extra_property();
    let regenerated = generate(&edited_spec).unwrap();
    let stale_now = stale(&scratch, &regenerated);
    for expected in [
        "generated/api/src/types.rs",
        "generated/openapi/chat.openapi.json",
        "generated/client/src/lib.rs",
        "generated/spec.sha256",
    ] {
        assert!(
            stale_now.contains(&PathBuf::from(expected)),
            "{expected} should be stale: {stale_now:?}"
        );
    }
    // The fingerprint build.rs compares changes with the spec.
    assert_ne!(
        fingerprint(&edited_spec),
        fingerprint(&read_spec(&workspace()).unwrap())
    );

    write(&scratch, &regenerated).unwrap();
    assert!(
        stale(&scratch, &regenerated).is_empty(),
        "after codegen nothing is stale"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn codegen_refuses_an_inconsistent_spec() {
    let spec = read_spec(&workspace()).unwrap();
    // JSON body that is not the wrapper of the XML body.
    let broken = spec.replacen(
        "schema: { $ref: '#/components/schemas/ChatMessageRoot' }",
        "schema: { $ref: '#/components/schemas/ChatSessionInformationRoot' }",
        1,
    );
    let err = generate(&broken).unwrap_err().to_string();
    assert!(err.contains("is not the wrapper of XML schema"), "{err}");
    // A reference to a schema that does not exist.
    let broken = spec.replacen(
        "$ref: '#/components/schemas/ParticipantStatus'",
        "$ref: '#/components/schemas/Nope'",
        1,
    );
    assert!(generate(&broken).is_err());
    // A list schema whose items are no choice of document roots cannot be written as OMA's
    // bare list (the items would have no element of their own).
    let broken = spec.replacen(
        "      items: { $ref: '#/components/schemas/ChannelNotification' }\n      xml: { name: notificationList,",
        "      items: { $ref: '#/components/schemas/ChatMessage' }\n      xml: { name: notificationList,",
        1,
    );
    assert_ne!(broken, spec, "the anchor moved");
    let err = generate(&broken).unwrap_err().to_string();
    assert!(err.contains("x-oma-choice member"), "{err}");
    // OpenAPI 3.1 is refused (progenitor reads 3.0 only).
    let broken = spec.replacen("openapi: 3.0.3", "openapi: 3.1.0", 1);
    assert!(generate(&broken).unwrap_err().to_string().contains("3.0"));
}

/// The spec with a query parameter `since` (bounded integer with a default) and a response
/// header `X-Total` added to `getMessage`.
fn spec_with_query_and_header() -> String {
    let spec = read_spec(&workspace()).unwrap();
    let anchor = "      operationId: getMessage\n      tags: [messages]\n      summary: Read one message of a session.\n";
    assert!(
        spec.contains(anchor),
        "getMessage moved; update this test's anchor"
    );
    let spec = spec.replacen(
        anchor,
        &format!(
            "{anchor}      parameters:\n        - name: since\n          in: query\n          required: false\n          description: A scratch parameter added by the test.\n          schema: {{ type: integer, minimum: 2, maximum: 9, default: 3 }}\n"
        ),
        1,
    );
    let anchor = "          description: The message.\n          content:\n";
    assert!(
        spec.contains(anchor),
        "getMessage's answer moved; update this test's anchor"
    );
    spec.replacen(
        anchor,
        "          description: The message.\n          headers:\n            X-Total:\n              description: A scratch header added by the test.\n              schema: { type: string }\n          content:\n",
        1,
    )
}

/// Issue 12 item 4: paging needs query parameters and a response header; both are generic.
/// A query parameter reaches the service trait (with its default and bounds checked by the
/// glue), the published OpenAPI and the client; a declared response header becomes a field
/// the service fills in.
#[test]
fn a_query_parameter_and_a_response_header_reach_trait_openapi_and_client() {
    let files = generate(&spec_with_query_and_header()).unwrap();
    let api = file(&files, "generated/api/src/api.rs");
    for expected in [
        "pub struct GetMessageQuery",
        "rename = \"since\"",
        "default = \"GetMessageQuery::since_default\"",
        "pub since: i64,",
        "`since` must be at least 2",
        "`since` must be at most 9",
        "query: GetMessageQuery,",
        "query: Captured<dropshot::Query<GetMessageQuery>>",
        "query.validate()?;",
        "pub struct GetMessageHeaders",
        "pub x_total: Option<String>,",
        "out.push((\"X-Total\", v.clone()));",
        "Headed<ChatMessage, GetMessageHeaders>",
        "Reply::headed(&accept, outcome)",
    ] {
        assert!(api.contains(expected), "api.rs lacks `{expected}`");
    }

    let published: serde_json::Value =
        serde_json::from_str(file(&files, "generated/openapi/chat.openapi.json")).unwrap();
    let op = &published["paths"]["/v1/chat/{userId}/chatSessions/{sessionId}/messages/{messageId}"]
        ["get"];
    assert_eq!(op["parameters"][0]["name"], "since");
    assert_eq!(op["parameters"][0]["in"], "query");
    assert_eq!(op["parameters"][0]["schema"]["maximum"], 9);
    assert_eq!(
        op["responses"]["200"]["headers"]["X-Total"]["schema"]["type"],
        "string"
    );

    let client = file(&files, "generated/client/src/lib.rs");
    assert!(
        client.contains("(\"since\", &since)"),
        "the progenitor client does not send it"
    );

    // A required query parameter would break clients that do not know it: refused.
    let broken = spec_with_query_and_header().replacen(
        "          in: query\n          required: false\n",
        "          in: query\n          required: true\n",
        1,
    );
    let err = generate(&broken).unwrap_err().to_string();
    assert!(err.contains("must be optional"), "{err}");
}

/// Issue 18: URLs are written down once, in the spec's paths. Every path template gets one
/// builder in `urls.rs` (found by its template in the doc), and an edited path reaches the
/// builder the server and the tests call.
#[test]
fn every_path_has_one_url_builder_and_a_path_edit_reaches_it() {
    let root = workspace();
    let spec = read_spec(&root).unwrap();
    let files = generate(&spec).unwrap();
    let urls = file(&files, "generated/api/src/urls.rs");
    let published: serde_json::Value =
        serde_json::from_str(file(&files, "generated/openapi/chat.openapi.json")).unwrap();
    let paths = published["paths"].as_object().unwrap();
    assert_eq!(urls.matches("    pub fn ").count(), paths.len() + 2); // + new, base
    for path in paths.keys() {
        assert_eq!(
            urls.matches(&format!("/// `{path}`:")).count(),
            1,
            "no single builder for {path}"
        );
    }
    assert!(urls.contains(
        "pub fn message_status(&self, user_id: &str, session_id: &str, message_id: &str) -> String"
    ));

    let old = "  /v1/chat/{userId}/chatSessions/{sessionId}/messages/{messageId}/status:";
    assert!(
        spec.contains(old),
        "the message status path moved; update this test"
    );
    let edited = spec.replacen(
        old,
        "  /v1/chat/{userId}/chatSessions/{sessionId}/messages/{messageId}/deliveryStatus:",
        1,
    );
    let regenerated = generate(&edited).unwrap();
    let urls = file(&regenerated, "generated/api/src/urls.rs");
    assert!(urls.contains("pub fn delivery_status("), "{urls}");
    assert!(urls.contains("\"{}/v1/chat/{}/chatSessions/{}/messages/{}/deliveryStatus\""));
    // With one `status` segment left, the participant's builder needs no prefix any more.
    assert!(urls.contains("pub fn status("), "{urls}");
    let scratch =
        std::env::temp_dir().join(format!("netapi-chat-sourcegen-urls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    write(&scratch, &files).unwrap();
    assert!(stale(&scratch, &regenerated).contains(&PathBuf::from("generated/api/src/urls.rs")));
    let _ = std::fs::remove_dir_all(&scratch);
}

/// `fooBarBaz` → `foo_bar_baz`: the naming rule of operations (the operation ids have no
/// acronyms), written here again so the test does not take the rule from the code it checks.
fn snake(id: &str) -> String {
    id.chars()
        .flat_map(|c| {
            let lower = c.to_ascii_lowercase();
            if c.is_ascii_uppercase() {
                vec!['_', lower]
            } else {
                vec![lower]
            }
        })
        .collect()
}

/// The source of builder `name` in `requests.rs`: from its `pub fn` to the next one.
fn request_builder<'a>(requests: &'a str, name: &str) -> &'a str {
    let start = requests
        .find(&format!("    pub fn {name}("))
        .unwrap_or_else(|| panic!("no request builder `{name}`:\n{requests}"));
    let rest = &requests[start + 1..];
    &rest[..rest.find("    pub fn ").unwrap_or(rest.len())]
}

/// Issue 18: an operation's method and URL are written down once, in the spec. Every
/// operation gets exactly one request builder in `requests.rs`, named by the naming rule, with
/// the spec's method and the URL builder of its path; an edit of an operation's method or path
/// in the spec reaches the builder the XML clients call.
#[test]
fn every_operation_has_one_request_builder_and_a_method_or_path_edit_reaches_it() {
    let root = workspace();
    let spec = read_spec(&root).unwrap();
    let files = generate(&spec).unwrap();
    let requests = file(&files, "generated/api/src/requests.rs");
    let published: serde_json::Value =
        serde_json::from_str(file(&files, "generated/openapi/chat.openapi.json")).unwrap();
    let mut operations = 0;
    for (path, item) in published["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(id) = op["operationId"].as_str() else {
                continue;
            };
            operations += 1;
            let name = snake(id);
            assert_eq!(
                requests.matches(&format!("    pub fn {name}(")).count(),
                1,
                "no single request builder for `{id}`"
            );
            let builder = request_builder(requests, &name);
            let method = method.to_uppercase();
            assert!(
                builder.contains(&format!("method: Method::{method},")),
                "{builder}"
            );
            assert!(
                requests.contains(&format!("`{path}`")),
                "no builder's doc names `{path}`"
            );
        }
    }
    assert!(operations >= 19, "only {operations} operations");
    // One builder per operation, and nothing else but `new` and `urls`.
    assert_eq!(requests.matches("    pub fn ").count(), operations + 2);
    let confirm = request_builder(requests, "confirm_message_delivery");
    assert!(confirm.contains("method: Method::POST,"), "{confirm}");
    assert!(
        confirm.contains("self.urls.message_status(user_id, session_id, message_id)"),
        "{confirm}"
    );
    let list = request_builder(requests, "list_messages");
    assert!(
        list.contains("max_entries: Option<u64>,") && list.contains("cursor: Option<&str>,"),
        "{list}"
    );
    assert!(list.contains("(\"maxEntries\", max_entries"), "{list}");

    let old_method = "    post:\n      operationId: confirmMessageDelivery\n";
    assert!(
        spec.contains(old_method),
        "confirmMessageDelivery moved; update this test"
    );
    let edited = spec.replacen(
        old_method,
        "    put:\n      operationId: confirmMessageDelivery\n",
        1,
    );
    let regenerated = generate(&edited).unwrap();
    let confirm = request_builder(
        file(&regenerated, "generated/api/src/requests.rs"),
        "confirm_message_delivery",
    );
    assert!(confirm.contains("method: Method::PUT,"), "{confirm}");

    let old_path = "  /v1/chat/{userId}/chatSessions/{sessionId}/messages/{messageId}/status:";
    assert!(
        spec.contains(old_path),
        "the message status path moved; update this test"
    );
    let edited = spec.replacen(
        old_path,
        "  /v1/chat/{userId}/chatSessions/{sessionId}/messages/{messageId}/deliveryStatus:",
        1,
    );
    let regenerated = generate(&edited).unwrap();
    let requests = file(&regenerated, "generated/api/src/requests.rs");
    let confirm = request_builder(requests, "confirm_message_delivery");
    assert!(
        confirm.contains("self.urls.delivery_status(user_id, session_id, message_id)"),
        "{confirm}"
    );
    assert!(requests.contains(
        "`/v1/chat/{userId}/chatSessions/{sessionId}/messages/{messageId}/deliveryStatus`"
    ));
}
