//! Emits the API: path-parameter structs, the [`ChatService`] trait a server implements (typed
//! values in, typed values or an OMA error out), the dropshot API trait, and the glue between
//! them that does content negotiation. Only the spec's operations are routed: a method a known
//! path does not have is answered before routing by the server's request gate
//! (`server/src/gate.rs`: OMA 405 with the exact `Allow`), so no endpoint is generated for it.

use crate::model::{FieldType, Operation, Spec};
use crate::naming::{doc_attrs, ident, pascal, snake, type_ident};
use anyhow::{Result, ensure};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// The `api.rs` items of the API crate.
pub fn emit(spec: &Spec) -> Result<TokenStream> {
    check_error_shape(spec)?;
    let paths = path_structs(spec)?;
    let path_items = paths.iter().map(|p| {
        let name = &p.name;
        let doc = doc_attrs(&format!("Path parameters of `{}`.", p.example));
        let fields = p.params.iter().map(|param| {
            let id = ident(&snake(param));
            let d = doc_attrs(&format!("`{param}`, percent-decoded."));
            quote! {
                #d
                #[serde(rename = #param)]
                pub #id: String,
            }
        });
        quote! {
            #doc
            #[derive(Clone, Debug, Deserialize, JsonSchema)]
            pub struct #name {
                #(#fields)*
            }
        }
    });

    let query_items = spec.operations.iter().map(query_struct);
    let header_items = spec.operations.iter().map(headers_struct);

    let authorize = spec.acting_user.as_ref().map(|param| {
        let doc = doc_attrs(&format!(
            "Checks the request's credentials (its `Authorization` header, if any) and resolves \
             the `{param}` of the path to the user the request acts for; every operation calls \
             this before it runs (and before its request body is read), and the operation gets \
             the returned user as `{}`. `peer` is the client's address, for limits on failed \
             attempts.",
            snake(param)
        ));
        quote! {
            #doc
            fn authorize(
                &self,
                authorization: Option<&str>,
                user: &str,
                peer: std::net::SocketAddr,
            ) -> Result<String, ApiError>;
        }
    });
    let service_methods = spec.operations.iter().map(|op| {
        let name = ident(&snake(&op.id));
        let args = service_args(op);
        let out = service_output(op);
        let doc = doc_attrs(&operation_doc(op));
        quote! {
            #doc
            fn #name(&self, #(#args),*) -> impl std::future::Future<Output = Result<#out, ApiError>> + Send;
        }
    });

    let mut endpoints = Vec::new();
    let mut impls = Vec::new();
    for op in &spec.operations {
        let (e, i) = endpoint(op, &paths, spec.acting_user.as_deref());
        endpoints.push(e);
        impls.push(i);
    }
    Ok(quote! {
        use crate::types::*;
        use dropshot::{HttpError, Path, RequestContext};
        use netapi_chat_runtime::negotiate::{Body, Captured, Credentials, Negotiated};
        use netapi_chat_runtime::wire::ErrorDocument;
        use netapi_chat_runtime::ApiError;
        use schemars::JsonSchema;
        use serde::Deserialize;
        use std::marker::PhantomData;

        pub use netapi_chat_runtime::negotiate::{Created, Headed};

        /// A response with a body, or a `requestError`, in the negotiated format.
        pub type Reply<T, const STATUS: u16> = netapi_chat_runtime::negotiate::Reply<T, RequestError, STATUS>;
        /// A 204, or a `requestError` in the negotiated format.
        pub type NoContent = netapi_chat_runtime::negotiate::NoContent<RequestError>;

        #(#path_items)*

        #(#query_items)*

        #(#header_items)*

        /// What a chat server implements: one method per operation of the spec. Formats,
        /// content negotiation and error rendering are done before and after these run.
        pub trait ChatService: Send + Sync + 'static {
            #authorize
            #(#service_methods)*
        }

        /// The chat API as dropshot sees it (generated from the spec; implement
        /// [`ChatService`] instead and serve it with [`api_description`]).
        #[dropshot::api_description]
        pub trait ChatApi {
            /// The server state every endpoint gets.
            type Context: Send + Sync + 'static;

            #(#endpoints)*
        }

        /// Adapts any [`ChatService`] to [`ChatApi`].
        pub struct ChatApiImpl<S>(PhantomData<fn() -> S>);

        impl<S: ChatService> ChatApi for ChatApiImpl<S> {
            type Context = S;

            #(#impls)*
        }

        /// The dropshot API of a [`ChatService`], every operation of the spec routed.
        pub fn api_description<S: ChatService>() -> Result<dropshot::ApiDescription<S>, dropshot::ApiDescriptionBuildErrors> {
            chat_api_mod::api_description::<ChatApiImpl<S>>()
        }

        /// The dropshot API with no implementation, for generating its OpenAPI document.
        pub fn stub_api_description() -> Result<dropshot::ApiDescription<dropshot::StubContext>, dropshot::ApiDescriptionBuildErrors> {
            chat_api_mod::stub_api_description()
        }

        impl ErrorDocument for RequestError {
            fn from_error(error: &ApiError) -> Self {
                let exception = ServiceException {
                    message_id: error.message_id.to_owned(),
                    text: error.text.clone(),
                    variables: error.variables.clone(),
                };
                match error.kind {
                    netapi_chat_runtime::ExceptionKind::Service => RequestError {
                        link: Vec::new(),
                        service_exception: Some(exception),
                        policy_exception: None,
                    },
                    netapi_chat_runtime::ExceptionKind::Policy => RequestError {
                        link: Vec::new(),
                        service_exception: None,
                        policy_exception: Some(exception),
                    },
                }
            }
        }
    })
}

/// The generated `ErrorDocument` impl assumes OMA's `RequestError` / `ServiceException` shape.
fn check_error_shape(spec: &Spec) -> Result<()> {
    use crate::model::SchemaKind;
    let fields = |name: &str| -> Vec<String> {
        match spec.schema(name).map(|s| &s.kind) {
            Some(SchemaKind::Struct(s)) => s.fields.iter().map(|f| f.name.clone()).collect(),
            _ => Vec::new(),
        }
    };
    ensure!(
        fields("RequestError") == ["link", "serviceException", "policyException"],
        "schema `RequestError` must have exactly `link`, `serviceException`, `policyException` (OMA Common)"
    );
    ensure!(
        fields("ServiceException") == ["messageId", "text", "variables"],
        "schema `ServiceException` must have exactly `messageId`, `text`, `variables` (OMA Common)"
    );
    Ok(())
}

struct PathStruct {
    name: syn::Ident,
    params: Vec<String>,
    example: String,
}

fn path_structs(spec: &Spec) -> Result<Vec<PathStruct>> {
    let mut out: Vec<PathStruct> = Vec::new();
    for op in &spec.operations {
        if out.iter().any(|p| p.params == op.path_params) {
            continue;
        }
        let Some(last) = op.path_params.last() else {
            continue;
        };
        // `{Last}Path`; a later list ending in the same parameter (the OMA 2012 face's
        // `…/{otherUserId}/{sessionId}`) is named after every parameter but the first (the
        // acting user): `OtherUserIdSessionIdPath`.
        let mut name = format_ident!("{}Path", pascal(last));
        if out.iter().any(|p| p.name == name) {
            let all: String = op.path_params.iter().skip(1).map(|p| pascal(p)).collect();
            name = format_ident!("{all}Path");
        }
        ensure!(
            !out.iter().any(|p| p.name == name),
            "two different parameter lists end in `{last}`; path struct names would clash"
        );
        out.push(PathStruct {
            name,
            params: op.path_params.clone(),
            example: op.path.clone(),
        });
    }
    Ok(out)
}

fn path_struct<'a>(op: &Operation, paths: &'a [PathStruct]) -> Option<&'a PathStruct> {
    paths.iter().find(|p| p.params == op.path_params)
}

fn service_args(op: &Operation) -> Vec<TokenStream> {
    let mut args: Vec<TokenStream> = op
        .path_params
        .iter()
        .map(|p| {
            let id = ident(&snake(p));
            quote!(#id: String)
        })
        .collect();
    if !op.query_params.is_empty() {
        let t = query_ident(op);
        args.push(quote!(query: #t));
    }
    if let Some(b) = &op.body {
        let t = body_type(b);
        if op.body_optional {
            args.push(quote!(body: Option<#t>));
        } else {
            args.push(quote!(body: #t));
        }
    }
    args
}

/// The Rust type of a request body: its root's type, or `OneOf` of its two roots' types.
fn body_type(roots: &[String]) -> TokenStream {
    match roots {
        [a, b] => {
            let (a, b) = (type_ident(a), type_ident(b));
            quote!(netapi_chat_runtime::wire::OneOf<#a, #b>)
        }
        _ => {
            let t = roots.iter().map(|r| type_ident(r));
            quote!(#(#t)*)
        }
    }
}

fn query_ident(op: &Operation) -> syn::Ident {
    format_ident!("{}Query", pascal(&op.id))
}

fn headers_ident(op: &Operation) -> syn::Ident {
    format_ident!("{}Headers", pascal(&op.id))
}

/// The query parameters of an operation as one struct (dropshot's `Query` extractor reads it):
/// a parameter with a default is a plain value, filled in when absent; the others are
/// `Option`s. `validate` enforces the spec's bounds, so the service gets checked values.
fn query_struct(op: &Operation) -> TokenStream {
    if op.query_params.is_empty() {
        return TokenStream::new();
    }
    let name = query_ident(op);
    let doc = doc_attrs(&format!("Query parameters of `{}`.", op.id));
    let mut fields = Vec::new();
    let mut defaults = Vec::new();
    let mut checks = Vec::new();
    for q in &op.query_params {
        let id = ident(&snake(&q.name));
        let wire = &q.name;
        let d = doc_attrs(q.description.as_deref().unwrap_or(wire));
        let ty = match q.ty {
            FieldType::Int64 => quote!(i64),
            _ => quote!(String),
        };
        match q.default {
            Some(default) => {
                let f = format_ident!("{}_default", snake(&q.name));
                let path = format!("{name}::{f}");
                let fdoc = doc_attrs(&format!(
                    "`{wire}` when the request does not give it ({default})."
                ));
                defaults.push(quote! {
                    #fdoc
                    pub fn #f() -> i64 { #default }
                });
                fields.push(quote! {
                    #d
                    #[serde(rename = #wire, default = #path)]
                    pub #id: #ty,
                });
                let bound = |op: TokenStream, v: i64, word: &str| {
                    let msg = format!("`{wire}` must be {word} {v} ({{}} given)");
                    quote! {
                        if self.#id #op #v {
                            return Err(ApiError::invalid_input(format!(#msg, self.#id)));
                        }
                    }
                };
                if let Some(m) = q.minimum {
                    checks.push(bound(quote!(<), m, "at least"));
                }
                if let Some(m) = q.maximum {
                    checks.push(bound(quote!(>), m, "at most"));
                }
            }
            None => {
                fields.push(quote! {
                    #d
                    #[serde(rename = #wire, default)]
                    pub #id: Option<#ty>,
                });
                let bound = |op: TokenStream, v: i64, word: &str| {
                    let msg = format!("`{wire}` must be {word} {v} ({{}} given)");
                    quote! {
                        if let Some(x) = self.#id {
                            if x #op #v {
                                return Err(ApiError::invalid_input(format!(#msg, x)));
                            }
                        }
                    }
                };
                if let Some(m) = q.minimum {
                    checks.push(bound(quote!(<), m, "at least"));
                }
                if let Some(m) = q.maximum {
                    checks.push(bound(quote!(>), m, "at most"));
                }
                if let Some(max) = q.max_length {
                    checks.push(quote! {
                        if let Some(v) = &self.#id {
                            netapi_chat_runtime::wire::check_string(#wire, v, #max)
                                .map_err(ApiError::invalid_input)?;
                        }
                    });
                }
            }
        }
    }
    quote! {
        #doc
        #[derive(Clone, Debug, Deserialize, JsonSchema)]
        pub struct #name {
            #(#fields)*
        }

        impl #name {
            #(#defaults)*

            /// Checks the bounds the spec gives the parameters (400 `SVC0002` naming the
            /// parameter and its bound).
            pub fn validate(&self) -> Result<(), ApiError> {
                #(#checks)*
                Ok(())
            }
        }
    }
}

/// The response headers an operation's success declares, as one struct the service fills in;
/// the glue writes each present one.
fn headers_struct(op: &Operation) -> TokenStream {
    if op.response_headers.is_empty() {
        return TokenStream::new();
    }
    let name = headers_ident(op);
    let doc = doc_attrs(&format!("Response headers of `{}`.", op.id));
    let fields = op.response_headers.iter().map(|h| {
        let id = ident(&snake(&h.name));
        let d = doc_attrs(h.description.as_deref().unwrap_or(&h.name));
        quote! {
            #d
            pub #id: Option<String>,
        }
    });
    let pairs = op.response_headers.iter().map(|h| {
        let id = ident(&snake(&h.name));
        let wire = &h.name;
        quote! {
            if let Some(v) = &self.#id {
                out.push((#wire, v.clone()));
            }
        }
    });
    quote! {
        #doc
        #[derive(Clone, Debug, Default)]
        pub struct #name {
            #(#fields)*
        }

        impl netapi_chat_runtime::negotiate::ResponseHeaders for #name {
            fn pairs(&self) -> Vec<(&'static str, String)> {
                let mut out = Vec::new();
                #(#pairs)*
                out
            }
        }
    }
}

fn service_output(op: &Operation) -> TokenStream {
    if let (Some(r), false) = (&op.response, op.response_headers.is_empty()) {
        let t = type_ident(r);
        let h = headers_ident(op);
        return quote!(Headed<#t, #h>);
    }
    match (&op.response, op.success) {
        (Some(r), 201) => {
            let t = type_ident(r);
            quote!(Created<#t>)
        }
        (Some(r), _) => {
            let t = type_ident(r);
            quote!(#t)
        }
        (None, _) => quote!(()),
    }
}

fn operation_doc(op: &Operation) -> String {
    let mut doc = op.summary.clone().unwrap_or_else(|| op.id.clone());
    if let Some(d) = &op.description {
        doc.push_str("\n\n");
        doc.push_str(d);
    }
    doc
}

fn endpoint(
    op: &Operation,
    paths: &[PathStruct],
    acting_user: Option<&str>,
) -> (TokenStream, TokenStream) {
    let name = ident(&snake(&op.id));
    let method = format_ident!("{}", op.method);
    let path = &op.path;
    let op_id = &op.id;
    let tags = &op.tags;
    let doc = doc_attrs(&operation_doc(op));

    let mut params = vec![quote!(accept: Negotiated)];
    if acting_user.is_some() {
        params.push(quote!(credentials: Credentials));
    }
    let mut takes = Vec::new();
    let mut call_args = Vec::new();
    if let Some(ps) = path_struct(op, paths) {
        let t = &ps.name;
        params.push(quote!(path: Captured<Path<#t>>));
        takes.push(quote!(let path = path.0?.into_inner();));
        if let Some(param) = acting_user {
            let id = ident(&snake(param));
            takes.push(quote! {
                let #id = rqctx.context().authorize(
                    credentials.0.as_deref(),
                    &path.#id,
                    rqctx.request.remote_addr(),
                )?;
            });
        }
        for p in &op.path_params {
            let id = ident(&snake(p));
            if Some(p.as_str()) == acting_user {
                call_args.push(quote!(#id));
            } else {
                call_args.push(quote!(path.#id));
            }
        }
    }
    if !op.query_params.is_empty() {
        let t = query_ident(op);
        params.push(quote!(query: Captured<dropshot::Query<#t>>));
        takes.push(quote! {
            let query = query.0?.into_inner();
            query.validate()?;
        });
        call_args.push(quote!(query));
    }
    if op.body.is_some() {
        // Read and parsed only now, after authorization.
        if op.body_optional {
            takes.push(quote!(let body = body.read_optional().await?;));
        } else {
            takes.push(quote!(let body = body.read().await?;));
        }
        call_args.push(quote!(body));
    }
    // A refusal answered before the body was read closes the connection (see `Body::finish`).
    let finish = op
        .body
        .as_ref()
        .map(|_| quote!(let outcome = body.finish(outcome);));
    let (ret, wrap) = match (&op.response, op.success) {
        (Some(r), status) => {
            let t = type_ident(r);
            let s = proc_macro2::Literal::u16_unsuffixed(status);
            let ctor = if !op.response_headers.is_empty() {
                quote!(headed)
            } else if status == 201 {
                quote!(created)
            } else {
                quote!(ok)
            };
            (
                quote!(Reply<#t, #s>),
                quote!(Reply::#ctor(&accept, outcome)),
            )
        }
        (None, _) => (quote!(NoContent), quote!(NoContent::new(&accept, outcome))),
    };
    // The body comes last; the implementation reads it through `&mut` (a trait declaration
    // takes no `mut`).
    let mut impl_params = params.clone();
    if let Some(b) = &op.body {
        let t = body_type(b);
        params.push(quote!(body: Body<#t>));
        impl_params.push(quote!(mut body: Body<#t>));
    }
    // The operation runs with the request's credentials at hand (a long poll checks them
    // again before it answers: `Credentials::scope`).
    let call = if acting_user.is_some() {
        quote!(credentials.scope(rqctx.context().#name(#(#call_args),*)).await)
    } else {
        quote!(rqctx.context().#name(#(#call_args),*).await)
    };
    let decl = quote! {
        #doc
        #[endpoint { method = #method, path = #path, operation_id = #op_id, tags = [#(#tags),*] }]
        async fn #name(
            rqctx: RequestContext<Self::Context>,
            #(#params),*
        ) -> Result<#ret, HttpError>;
    };
    let imp = quote! {
        async fn #name(
            rqctx: RequestContext<S>,
            #(#impl_params),*
        ) -> Result<#ret, HttpError> {
            let outcome = async {
                accept.check()?;
                #(#takes)*
                #call
            }
            .await;
            #finish
            Ok(#wrap)
        }
    };
    (decl, imp)
}
