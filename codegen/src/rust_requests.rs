//! Emits `requests.rs`: one request builder per operation of the spec (progenitor's rule:
//! parse a template once and generate the builders). A builder takes the operation's path
//! parameters and its query parameters and answers the request line,
//! `netapi_chat_runtime::url::OperationRequest`: the spec's method, and the URL of the path's
//! builder in `urls.rs` with the given query pairs encoded. So code that speaks HTTP itself
//! (the XML face, which the progenitor client does not speak) writes neither a verb nor a URL
//! (issue 18); the body stays with the caller, who encodes it in its own format.
//!
//! **Naming rule** (stated in the generated file too): operation `fooBarBaz` is the builder
//! `foo_bar_baz`, as in the service trait and the progenitor client; its path parameters are
//! the URL builder's (`{sessionId}` → `session_id: &str`), then one `Option` per query
//! parameter in declaration order, `None` leaving it out of the URL.

use crate::model::{FieldType, Operation, QueryParam, Spec};
use crate::naming::{doc_attrs, ident, snake};
use crate::rust_urls;
use anyhow::{Context, Result, bail};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// The Rust type a builder takes for a query parameter: `&str` for a string; for an integer,
/// `u64` when the spec's minimum is not negative (the type the progenitor client gives it, so
/// a caller hands the same value to both), `i64` otherwise.
fn query_type(q: &QueryParam) -> Result<TokenStream> {
    Ok(match q.ty {
        FieldType::String => quote!(&str),
        FieldType::Int64 if q.minimum.is_some_and(|m| m >= 0) => quote!(u64),
        FieldType::Int64 => quote!(i64),
        ref other => bail!(
            "query parameter `{}` is a {other:?}: only strings and integers go into a URL",
            q.name
        ),
    })
}

/// The builder's doc: the request line, what the body is and what success answers.
fn doc(op: &Operation) -> String {
    let method = op.method.to_uppercase();
    let mut text = format!("`{}`: {method} `{}`.", op.id, op.path);
    match op.body.as_deref() {
        Some([root]) => text.push_str(&format!(" Body: a `{root}`.")),
        Some(roots) => {
            let roots: Vec<String> = roots.iter().map(|r| format!("`{r}`")).collect();
            text.push_str(&format!(" Body: one of {}.", roots.join(", ")));
        }
        None => text.push_str(" No body."),
    }
    match &op.response {
        Some(root) => text.push_str(&format!(" Success: {} with a `{root}`.", op.success)),
        None => text.push_str(&format!(" Success: {}.", op.success)),
    }
    text
}

/// One operation's builder.
fn builder(op: &Operation, url_builder: &str) -> Result<TokenStream> {
    let name = ident(&snake(&op.id));
    let doc = doc_attrs(&doc(op));
    let method = format_ident!("{}", op.method.to_uppercase());
    let url_builder = format_ident!("{url_builder}");
    let path_args: Vec<syn::Ident> = op.path_params.iter().map(|p| ident(&snake(p))).collect();
    let mut query_args = Vec::new();
    let mut pairs = Vec::new();
    for q in &op.query_params {
        let id = ident(&snake(&q.name));
        let ty = query_type(q)?;
        let wire = &q.name;
        query_args.push(quote!(#id: Option<#ty>));
        pairs.push(quote!((#wire, #id.map(|v| v.to_string()))));
    }
    let url = if pairs.is_empty() {
        quote!(self.urls.#url_builder(#(#path_args),*))
    } else {
        quote!(with_query(self.urls.#url_builder(#(#path_args),*), &[#(#pairs),*]))
    };
    Ok(quote! {
        #doc
        pub fn #name(&self, #(#path_args: &str,)* #(#query_args),*) -> OperationRequest {
            OperationRequest {
                method: Method::#method,
                url: #url,
            }
        }
    })
}

/// The `requests.rs` items of the API crate.
pub fn emit(spec: &Spec) -> Result<TokenStream> {
    let url_builders = rust_urls::builder_names(spec)?;
    let builders = spec
        .operations
        .iter()
        .map(|op| {
            let (_, url_builder) = url_builders
                .iter()
                .find(|(path, _)| *path == op.path)
                .with_context(|| format!("`{}`: no URL builder for `{}`", op.id, op.path))?;
            builder(op, url_builder)
        })
        .collect::<Result<Vec<_>>>()?;
    let any_query = spec.operations.iter().any(|op| !op.query_params.is_empty());
    let with_query = any_query.then(|| quote!(with_query,));
    Ok(quote! {
        use crate::urls::Urls;
        use netapi_chat_runtime::url::{Method, OperationRequest, #with_query};

        /// The request line of each of the API's operations, one method per operation of the
        /// spec, its URLs made by [`Urls`].
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Requests {
            urls: Urls,
        }

        impl Requests {
            /// The requests of the server whose URLs `urls` makes.
            pub fn new(urls: Urls) -> Self {
                Requests { urls }
            }

            /// The URL builders the requests use.
            pub fn urls(&self) -> &Urls {
                &self.urls
            }

            #(#builders)*
        }
    })
}
