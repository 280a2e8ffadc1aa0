//! Emits `urls.rs`: one URL builder per path template of the spec (progenitor style). Each
//! template is parsed here, once, into literal text and parameters; the generated method
//! formats the literals with each parameter percent-encoded as one path segment
//! (`netapi_chat_runtime::url::encode_segment`), so a URL is written down only in the spec.
//!
//! **Naming rule** (stated in the generated file too): a builder is named after the last
//! segment of its template in snake_case, a parameter `{xId}` read as `x`
//! (`…/chatSessions` → `chat_sessions`, `…/chatSessions/{sessionId}` → `session`); when two
//! templates would get the same name, each is prefixed with the name of the segment before it
//! (`…/participants/{participantId}/status` → `participant_status`).
//!
//! **A second face** (issue 16): a path item may carry `x-netapi-urls-prefix: <name>` (the OMA
//! 2012 tree's `one_to_one`). Its templates are named by the same rule among the templates with
//! the same prefix only, and the name is then prefixed (`…/oneToOne/{otherUserId}/{sessionId}`
//! → `one_to_one_session`), so a face's names never change the names of another face.

use crate::model::Spec;
use crate::naming::{doc_attrs, ident, snake};
use anyhow::{Result, bail, ensure};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

impl Segment {
    /// The segment's part of a builder name: `chatSessions` → `chat_sessions`,
    /// `{sessionId}` → `session`.
    fn word(&self) -> String {
        match self {
            Segment::Literal(l) => snake(l),
            Segment::Param(p) => snake(p.strip_suffix("Id").unwrap_or(p)),
        }
    }
}

/// A path template, parsed.
struct Template {
    path: String,
    segments: Vec<Segment>,
    /// `operationId (METHOD)` of each operation on the path, for the builder's doc.
    operations: Vec<String>,
    /// The path item's `x-netapi-urls-prefix`: its face's name prefix (module doc).
    prefix: Option<String>,
}

fn parse(path: &str) -> Result<Vec<Segment>> {
    let Some(rest) = path.strip_prefix('/') else {
        bail!("path `{path}` does not start with `/`");
    };
    rest.split('/')
        .map(|seg| {
            if let Some(p) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                ensure!(
                    !p.is_empty() && !p.contains(['{', '}']),
                    "path `{path}`: bad parameter segment `{seg}`"
                );
                Ok(Segment::Param(p.to_owned()))
            } else {
                ensure!(
                    !seg.is_empty() && !seg.contains(['{', '}']),
                    "path `{path}`: a parameter must be a whole segment (`{seg}`)"
                );
                Ok(Segment::Literal(seg.to_owned()))
            }
        })
        .collect()
}

/// The builder names of `templates`, by the naming rule in the module doc.
fn names(templates: &[Template]) -> Result<Vec<String>> {
    let short = |t: &Template| t.segments.last().map(Segment::word).unwrap_or_default();
    let long = |t: &Template| {
        let n = t.segments.len();
        match n {
            0 => String::new(),
            1 => t.segments[0].word(),
            _ => format!("{}_{}", t.segments[n - 2].word(), t.segments[n - 1].word()),
        }
    };
    let names: Vec<String> = templates
        .iter()
        .map(|t| {
            let s = short(t);
            let clash = templates
                .iter()
                .filter(|o| o.prefix == t.prefix && short(o) == s)
                .count()
                > 1;
            let name = if clash { long(t) } else { s };
            match &t.prefix {
                Some(p) => format!("{p}_{name}"),
                None => name,
            }
        })
        .collect();
    for (i, n) in names.iter().enumerate() {
        ensure!(!n.is_empty(), "path `{}` has no segment", templates[i].path);
        if let Some(j) = names.iter().position(|m| m == n).filter(|&j| j != i) {
            bail!(
                "paths `{}` and `{}` would both have the URL builder `{n}`",
                templates[j].path,
                templates[i].path
            );
        }
    }
    Ok(names)
}

/// The path templates of the spec's operations, parsed, each once, in spec order.
fn templates(spec: &Spec) -> Result<Vec<Template>> {
    let mut templates: Vec<Template> = Vec::new();
    for op in &spec.operations {
        let label = format!("`{}` ({})", op.id, op.method.to_uppercase());
        match templates.iter_mut().find(|t| t.path == op.path) {
            Some(t) => t.operations.push(label),
            None => templates.push(Template {
                path: op.path.clone(),
                segments: parse(&op.path)?,
                operations: vec![label],
                prefix: spec.raw["paths"][&op.path]["x-netapi-urls-prefix"]
                    .as_str()
                    .map(str::to_owned),
            }),
        }
    }
    Ok(templates)
}

/// Each path template of the spec with the name of its URL builder (the names [`emit`]
/// gives), for the request builders (`rust_requests`), which build their URLs with them.
pub(crate) fn builder_names(spec: &Spec) -> Result<Vec<(String, String)>> {
    let templates = templates(spec)?;
    let names = names(&templates)?;
    Ok(templates.into_iter().map(|t| t.path).zip(names).collect())
}

/// The `urls.rs` items of the API crate.
pub fn emit(spec: &Spec) -> Result<TokenStream> {
    let templates = templates(spec)?;
    let names = names(&templates)?;
    let builders = templates.iter().zip(&names).map(|(t, name)| {
        let name = format_ident!("{name}");
        let doc = doc_attrs(&format!("`{}`: {}.", t.path, t.operations.join(", ")));
        let mut format = String::new();
        let mut args = Vec::new();
        let mut values = Vec::new();
        for seg in &t.segments {
            format.push('/');
            match seg {
                Segment::Literal(l) => format.push_str(l),
                Segment::Param(p) => {
                    format.push_str("{}");
                    let id = ident(&snake(p));
                    args.push(quote!(#id: &str));
                    values.push(quote!(encode_segment(#id)));
                }
            }
        }
        let format = format!("{{}}{format}");
        quote! {
            #doc
            pub fn #name(&self, #(#args),*) -> String {
                format!(#format, self.base, #(#values),*)
            }
        }
    });
    Ok(quote! {
        use netapi_chat_runtime::url::encode_segment;

        /// Absolute URLs of the API's resources, one method per path template of the spec.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Urls {
            base: String,
        }

        impl Urls {
            /// `base` is the server's public base URL, e.g. `http://127.0.0.1:8080`; a trailing
            /// `/` is dropped. An empty base gives paths (`/v1/chat/…`).
            pub fn new(base: impl Into<String>) -> Self {
                Urls {
                    base: base.into().trim_end_matches('/').to_owned(),
                }
            }

            /// The base URL, without a trailing `/`.
            pub fn base(&self) -> &str {
                &self.base
            }

            #(#builders)*
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(path: &str) -> Template {
        Template {
            path: path.to_owned(),
            segments: parse(path).unwrap(),
            operations: Vec::new(),
            prefix: None,
        }
    }

    #[test]
    fn a_prefixed_face_is_named_on_its_own() {
        let mut ts: Vec<Template> = [
            "/v1/chat/{userId}/chatSessions/{sessionId}",
            "/v1/chat/{userId}/chatSessions/{sessionId}/messages",
            "/chat/v1/{userId}/oneToOne/{otherUserId}/{sessionId}",
            "/chat/v1/{userId}/oneToOne/{otherUserId}/{sessionId}/messages",
            "/chat/v1/{userId}/oneToOne/{otherUserId}/{sessionId}/status",
            "/chat/v1/{userId}/oneToOne/{otherUserId}/{sessionId}/messages/{messageId}/status",
        ]
        .into_iter()
        .map(template)
        .collect();
        for t in &mut ts[2..] {
            t.prefix = Some("one_to_one".into());
        }
        assert_eq!(
            names(&ts).unwrap(),
            [
                "session",
                "messages",
                "one_to_one_session",
                "one_to_one_messages",
                "one_to_one_session_status",
                "one_to_one_message_status"
            ]
        );
    }

    #[test]
    fn names_follow_the_rule() {
        let ts: Vec<Template> = [
            "/v1/chat/{userId}/chatSessions",
            "/v1/chat/{userId}/chatSessions/{sessionId}",
            "/v1/chat/{userId}/chatSessions/{sessionId}/participants/{participantId}/status",
            "/v1/chat/{userId}/chatSessions/{sessionId}/messages/{messageId}/status",
        ]
        .into_iter()
        .map(template)
        .collect();
        assert_eq!(
            names(&ts).unwrap(),
            [
                "chat_sessions",
                "session",
                "participant_status",
                "message_status"
            ]
        );
    }

    #[test]
    fn a_clash_the_rule_cannot_resolve_is_an_error() {
        let ts: Vec<Template> = ["/a/{xId}/status", "/b/{xId}/status"]
            .into_iter()
            .map(template)
            .collect();
        let e = names(&ts).unwrap_err().to_string();
        assert!(e.contains("x_status"), "{e}");
    }

    #[test]
    fn a_parameter_must_be_a_whole_segment() {
        assert!(parse("/v1/chat/user{userId}").is_err());
        assert!(parse("v1/chat").is_err());
        assert_eq!(
            parse("/v1/{userId}").unwrap(),
            [
                Segment::Literal("v1".into()),
                Segment::Param("userId".into())
            ]
        );
    }
}
