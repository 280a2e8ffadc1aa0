//! Emits the data types: one struct per object schema, one enum per string enum, one JSON
//! wrapper per document root, each speaking JSON (serde) and XML (the runtime's `xml` traits).

use crate::model::{
    BARE_LIST_FIELD, Card, Field, FieldType, ROOT_SUFFIX, Schema, SchemaKind, Spec, StructSchema,
};
use crate::naming::{doc_attrs, ident, snake, type_ident, variant_ident};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// The `types.rs` items of the API crate.
pub fn emit(spec: &Spec) -> TokenStream {
    let mut items = TokenStream::new();
    for schema in &spec.schemas {
        items.extend(match &schema.kind {
            SchemaKind::Enum(values) => emit_enum(schema, values),
            SchemaKind::Struct(st) => emit_struct(spec, schema, st),
        });
    }
    items.extend(emit_notification_enum(spec));
    items.extend(emit_json_names_check(spec));
    quote! {
        use netapi_chat_runtime::wire::Validate;
        use netapi_chat_runtime::xml::{Element, XmlError, XmlLeaf, XmlRoot, XmlType, XmlWriter};
        use schemars::JsonSchema;
        use serde::{Deserialize, Serialize};

        #items
    }
}

/// A test that each document's `JSON_NAMES`, listed from the spec ([`json_names`]), are the
/// property names of its JSON wrapper's derived schema: the two ways to the names agree.
fn emit_json_names_check(spec: &Spec) -> TokenStream {
    let roots: Vec<_> = spec
        .schemas
        .iter()
        .filter(|s| matches!(&s.kind, SchemaKind::Struct(st) if st.root.is_some()))
        .map(|s| type_ident(&s.name))
        .collect();
    let names = roots.iter().map(ToString::to_string);
    quote! {
        #[cfg(test)]
        mod json_names {
            use netapi_chat_runtime::wire::{Document, schema_names};

            /// Each document's `JSON_NAMES` are its JSON schema's property names.
            #[test]
            fn are_the_names_of_each_documents_schema() {
                #(
                    assert_eq!(
                        schema_names::<<super::#roots as Document>::Json>(),
                        <super::#roots as Document>::JSON_NAMES,
                        #names
                    );
                )*
            }
        }
    }
}

fn emit_enum(schema: &Schema, values: &[String]) -> TokenStream {
    let name = type_ident(&schema.name);
    let docs = doc_attrs(
        schema
            .description
            .as_deref()
            .unwrap_or("An OMA enumeration."),
    );
    let variants: Vec<_> = values.iter().map(|v| variant_ident(v)).collect();
    let variant_docs = values.iter().map(|v| format!(" `{v}`"));
    let list = values.join(", ");
    let expecting = format!("one of {list}");
    quote! {
        #docs
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema)]
        pub enum #name {
            #(
                #[doc = #variant_docs]
                #[serde(rename = #values)]
                #variants,
            )*
        }

        impl #name {
            /// Every value, in spec order.
            pub const ALL: &'static [#name] = &[#(#name::#variants),*];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    #(#name::#variants => #values,)*
                }
            }
        }

        impl std::fmt::Display for #name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Reads the wire spelling, ignoring ASCII case (servers have sent `DELIVERED`).
        impl std::str::FromStr for #name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let s = s.trim();
                #name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s))
                    .ok_or_else(|| format!("`{s}` is not {}", #expecting))
            }
        }

        impl<'de> Deserialize<'de> for #name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl XmlLeaf for #name {
            fn to_xml_text(&self) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed(self.as_str())
            }
            fn from_xml_text(s: &str) -> Result<Self, String> {
                s.parse()
            }
        }
    }
}

fn rust_type(spec: &Spec, f: &Field) -> TokenStream {
    let base = match &f.ty {
        FieldType::String | FieldType::DateTime => quote!(String),
        FieldType::Bool => quote!(bool),
        FieldType::Int64 => quote!(i64),
        FieldType::Named(n) => {
            let _ = spec;
            let t = type_ident(n);
            quote!(#t)
        }
    };
    match f.card {
        Card::Required => base,
        Card::Optional => quote!(Option<#base>),
        Card::List { .. } => quote!(Vec<#base>),
    }
}

fn serde_attrs(f: &Field) -> TokenStream {
    let wire = &f.name;
    let rename = (snake(wire) != *wire).then(|| quote!(rename = #wire,));
    let lenient = |req: &str, opt: &str| match f.card {
        Card::Required => Some(req.to_owned()),
        Card::Optional => Some(opt.to_owned()),
        Card::List { .. } => None,
    };
    let reader = match (&f.ty, f.card) {
        (FieldType::String | FieldType::DateTime, Card::List { .. }) => {
            Some("netapi_chat_runtime::json::strings".to_owned())
        }
        (_, Card::List { .. }) => Some("netapi_chat_runtime::json::one_or_many".to_owned()),
        (FieldType::String | FieldType::DateTime, _) => lenient(
            "netapi_chat_runtime::json::string",
            "netapi_chat_runtime::json::opt_string",
        ),
        (FieldType::Bool, _) => lenient(
            "netapi_chat_runtime::json::bool",
            "netapi_chat_runtime::json::opt_bool",
        ),
        (FieldType::Int64, _) => lenient(
            "netapi_chat_runtime::json::int",
            "netapi_chat_runtime::json::opt_int",
        ),
        _ => None,
    };
    let with = reader.map(|r| quote!(deserialize_with = #r,));
    let extra = match f.card {
        Card::Required => quote!(),
        Card::Optional => quote!(default, skip_serializing_if = "Option::is_none",),
        // Structure-aware JSON (reference §5.3 B): a list a client iterates is `[]` when empty
        // (`x-empty-array`); another is left out then (see `Field::empty_array`).
        Card::List { min: 0 } if f.empty_array => quote!(default,),
        Card::List { min: 0 } => quote!(default, skip_serializing_if = "Vec::is_empty",),
        Card::List { .. } => quote!(),
    };
    let body = quote!(#rename #extra #with);
    if body.is_empty() {
        quote!()
    } else {
        quote!(#[serde(#body)])
    }
}

/// A struct schema: the type with its serde and schemars attributes, then its [`xml_impl`],
/// [`validate_impl`] and, for a document root, [`root_impl`].
fn emit_struct(spec: &Spec, schema: &Schema, st: &StructSchema) -> TokenStream {
    let name = type_ident(&schema.name);
    let docs = doc_attrs(schema.description.as_deref().unwrap_or("An OMA structure."));
    let fields = st.fields.iter().map(|f| {
        let id = ident(&snake(&f.name));
        let ty = rust_type(spec, f);
        // A list schema's document is its one list (`#[serde(transparent)]`, below), which
        // can be neither skipped nor defaulted; it reads OMA's single item and `null` too.
        let serde = if st.bare_list {
            quote!(#[serde(deserialize_with = "netapi_chat_runtime::json::one_or_many")])
        } else {
            serde_attrs(f)
        };
        let doc = match (&f.description, st.bare_list) {
            (Some(d), _) => format!("`{}`: {d}", f.name),
            (None, true) => "The items, in order: the document's whole content.".to_owned(),
            (None, false) => format!("`{}`.", f.name),
        };
        let docs = doc_attrs(&doc);
        // The limit in the schema dropshot derives too (not for a list: there `length` would
        // bound the number of items).
        let length = match (f.max_length, f.card) {
            (Some(max), Card::Required | Card::Optional) => {
                let max = proc_macro2::Literal::u64_unsuffixed(max);
                quote!(#[schemars(length(max = #max))])
            }
            _ => quote!(),
        };
        // A date-time is published as one (`format: date-time`), so that a generated client
        // types it.
        let format = match (&f.ty, f.card) {
            (FieldType::DateTime, Card::Required) => {
                quote!(#[schemars(with = "netapi_chat_runtime::date_time::DateTime")])
            }
            (FieldType::DateTime, Card::Optional) => {
                quote!(#[schemars(with = "Option<netapi_chat_runtime::date_time::DateTime>")])
            }
            (FieldType::DateTime, Card::List { .. }) => {
                quote!(#[schemars(with = "Vec<netapi_chat_runtime::date_time::DateTime>")])
            }
            _ => quote!(),
        };
        quote! {
            #docs
            #serde
            #length
            #format
            pub #id: #ty,
        }
    });

    let xml_impl = if st.bare_list {
        bare_list_xml_impl(spec, &name, st)
    } else {
        xml_impl(spec, schema, &name, st)
    };
    let validate_impl = validate_impl(spec, schema, &name, st);
    let root_impl = root_impl(spec, schema, &name, st);

    // Every field optional or a list: a `Default` derive is handy for tests and builders.
    let default = st
        .fields
        .iter()
        .all(|f| f.card != Card::Required)
        .then(|| quote!(Default,));
    let transparent = st.bare_list.then(|| quote!(#[serde(transparent)]));
    quote! {
        #docs
        #[derive(Clone, Debug, PartialEq, #default Serialize, Deserialize, JsonSchema)]
        #transparent
        pub struct #name {
            #(#fields)*
        }

        #xml_impl
        #validate_impl
        #root_impl
    }
}

/// `XmlType`: attributes, then child elements in sequence order; `read` reads the structure
/// and leaves the value rules to `Validate` (one copy of them for both faces).
fn xml_impl(spec: &Spec, schema: &Schema, name: &syn::Ident, st: &StructSchema) -> TokenStream {
    let write_attrs = st.fields.iter().filter(|f| f.attribute).map(|f| {
        let id = ident(&snake(&f.name));
        let wire = &f.name;
        match f.card {
            Card::Required => quote!(w.attribute(#wire, &self.#id.to_xml_text());),
            _ => quote!(if let Some(v) = &self.#id { w.attribute(#wire, &v.to_xml_text()); }),
        }
    });
    let write_children = st.fields.iter().filter(|f| !f.attribute).map(|f| {
        let id = ident(&snake(&f.name));
        let wire = &f.name;
        let complex = is_struct(spec, &f.ty);
        let put = if complex {
            quote!(w.element)
        } else {
            quote!(w.leaf)
        };
        match f.card {
            Card::Required => quote!(#put(#wire, &self.#id);),
            Card::Optional => quote!(if let Some(v) = &self.#id { #put(#wire, v); }),
            Card::List { .. } => quote!(for v in &self.#id { #put(#wire, v); }),
        }
    });
    let reads = st.fields.iter().map(|f| {
        let id = ident(&snake(&f.name));
        let wire = &f.name;
        let complex = is_struct(spec, &f.ty);
        let call = match (f.attribute, complex, f.card) {
            (true, _, Card::Required) => quote!(e.required_attribute(#wire)?),
            (true, _, _) => quote!(e.optional_attribute(#wire)?),
            (false, false, Card::Required) => quote!(e.required_leaf(#wire)?),
            (false, false, Card::Optional) => quote!(e.optional_leaf(#wire)?),
            (false, false, Card::List { .. }) => quote!(e.leaf_list(#wire)?),
            (false, true, Card::Required) => quote!(e.required_child(#wire)?),
            (false, true, Card::Optional) => quote!(e.optional_child(#wire)?),
            (false, true, Card::List { .. }) => quote!(e.child_list(#wire)?),
        };
        quote!(#id: #call,)
    });
    // OMA's concrete type of an element its schema declares abstract (`x-oma-xsi-type`).
    let xsi = st.xsi_type.as_ref().map(|t| {
        let qualified = format!("{}:{t}", schema.prefix);
        quote! {
            w.attribute("xmlns:xsi", netapi_chat_runtime::xml::XSI_NAMESPACE);
            w.attribute("xsi:type", #qualified);
        }
    });
    let attrs_fn = (st.fields.iter().any(|f| f.attribute) || xsi.is_some()).then(|| {
        quote! {
            fn write_attributes(&self, w: &mut XmlWriter) {
                #xsi
                #(#write_attrs)*
            }
        }
    });
    let has_children = st.fields.iter().any(|f| !f.attribute);
    let w_name = if has_children {
        format_ident!("w")
    } else {
        format_ident!("_w")
    };
    quote! {
        impl XmlType for #name {
            #attrs_fn
            fn write_children(&self, #w_name: &mut XmlWriter) {
                #(#write_children)*
            }
            fn read(e: &Element) -> Result<Self, XmlError> {
                let value = #name { #(#reads)* };
                value.validate().map_err(XmlError::Decode)?;
                Ok(value)
            }
        }
    }
}

/// `XmlType` of a list schema: each item is written as its chosen member's own root element,
/// in the member's namespace (`<chat:messageNotification xmlns:chat="…">`, as OMA's
/// `NotificationList` holds notifications), and read back from its element's local name, in
/// document order. An element that is no member is refused, like any unknown content.
fn bare_list_xml_impl(spec: &Spec, name: &syn::Ident, st: &StructSchema) -> TokenStream {
    let Some(FieldType::Named(item)) = st.fields.first().map(|f| &f.ty) else {
        return TokenStream::new();
    };
    let members: Vec<&Field> = match spec.schema(item).map(|s| &s.kind) {
        Some(SchemaKind::Struct(item_st)) => item_st.fields.iter().collect(),
        _ => Vec::new(),
    };
    let field = ident(BARE_LIST_FIELD);
    let item_ty = type_ident(item);
    let ids: Vec<_> = members.iter().map(|m| ident(&snake(&m.name))).collect();
    let wires: Vec<&String> = members.iter().map(|m| &m.name).collect();
    let root = st.root.as_deref().unwrap_or_default();
    let unknown = format!("`{root}` cannot hold an element `{{other}}`");
    quote! {
        impl XmlType for #name {
            fn write_children(&self, w: &mut XmlWriter) {
                for v in &self.#field {
                    #(
                        if let Some(n) = &v.#ids {
                            w.root_element(n);
                        }
                    )*
                }
            }
            fn read(e: &Element) -> Result<Self, XmlError> {
                let #field = e
                    .children
                    .iter()
                    .map(|c| {
                        Ok(match c.name.as_str() {
                            #(
                                #wires => #item_ty {
                                    #ids: Some(c.read_complex()?),
                                    ..Default::default()
                                },
                            )*
                            other => return Err(XmlError::Decode(format!(#unknown))),
                        })
                    })
                    .collect::<Result<Vec<_>, XmlError>>()?;
                let value = #name { #field };
                value.validate().map_err(XmlError::Decode)?;
                Ok(value)
            }
        }
    }
}

/// `Validate`: the checks serde cannot express, for both faces.
fn validate_impl(
    spec: &Spec,
    schema: &Schema,
    name: &syn::Ident,
    st: &StructSchema,
) -> TokenStream {
    // The checks serde cannot express (list minimums, `x-oma-choice`, string `maxLength`),
    // written once: the runtime runs them on a JSON body, the XML reader above calls them.
    let checks = st.fields.iter().filter_map(|f| {
        let id = ident(&snake(&f.name));
        let nested = is_struct(spec, &f.ty);
        let min = matches!(f.card, Card::List { min: 1 }).then(|| {
            let msg = format!("`{}` needs at least one `{}`", schema.name, f.name);
            quote! {
                if self.#id.is_empty() {
                    return Err(#msg.to_owned());
                }
            }
        });
        let inner = nested.then(|| match f.card {
            Card::Required => quote!(self.#id.validate()?;),
            Card::Optional => quote!(if let Some(v) = &self.#id { v.validate()?; }),
            Card::List { .. } => quote!(for v in &self.#id { v.validate()?; }),
        });
        // Every string is checked for characters XML cannot carry; one with a `maxLength`
        // for its length too. A string without one (a message's `text`, bounded by a setting
        // the core checks) is still a string both faces read back.
        let wire = &f.name;
        let string_check: Option<Box<dyn Fn(TokenStream) -> TokenStream>> =
            match (f.max_length, &f.ty) {
                (Some(max), _) => {
                    let max = proc_macro2::Literal::u64_unsuffixed(max);
                    Some(Box::new(move |v: TokenStream| {
                        quote!(netapi_chat_runtime::wire::check_string(#wire, #v, #max)?;)
                    }))
                }
                // A date-time's form is checked where it is used (`lastActive`, the one a
                // client sends that the server tells others): the others a client may send
                // are set by the server, which ignores what it was sent.
                (None, FieldType::String | FieldType::DateTime) => Some(Box::new(move |v: TokenStream| {
                    quote!(netapi_chat_runtime::wire::check_chars(#wire, #v)?;)
                })),
                (None, _) => None,
            };
        let max_length = string_check.map(|check| {
            match f.card {
                Card::Required => check(quote!(&self.#id)),
                Card::Optional => {
                    let c = check(quote!(v));
                    quote!(if let Some(v) = &self.#id { #c })
                }
                Card::List { .. } => {
                    let c = check(quote!(v));
                    quote!(for v in &self.#id { #c })
                }
            }
        });
        (min.is_some() || inner.is_some() || max_length.is_some())
            .then(|| quote!(#min #max_length #inner))
    });
    let choice_validate = (!st.choice.is_empty()).then(|| {
        let ids: Vec<_> = st.choice.iter().map(|c| ident(&snake(c))).collect();
        let names = st
            .choice
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(" or ");
        let msg = format!("`{}` needs exactly one of {names}", schema.name);
        quote! {
            if [#(self.#ids.is_some()),*].iter().filter(|p| **p).count() != 1 {
                return Err(#msg.to_owned());
            }
        }
    });
    quote! {
        impl Validate for #name {
            fn validate(&self) -> Result<(), String> {
                #(#checks)*
                #choice_validate
                Ok(())
            }
        }
    }
}

/// For a document root: `XmlRoot`, the JSON wrapper (`…Root`) and `Document`.
fn root_impl(
    spec: &Spec,
    schema: &Schema,
    name: &syn::Ident,
    st: &StructSchema,
) -> Option<TokenStream> {
    st.root.as_ref().map(|root| {
        let json_names = json_names(spec, root, st);
        let is_list = st.bare_list;
        let ns = &schema.namespace;
        let prefix = &schema.prefix;
        let wrapper = format_ident!("{}{}", schema.name, ROOT_SUFFIX);
        let field = ident(&snake(root));
        let wrapper_doc = doc_attrs(&format!(
            "JSON form of [`{}`]: an object whose one key is the root element's name, `{root}`; \
             any other key is refused (a body is one document).",
            schema.name
        ));
        let rename = (snake(root) != *root).then(|| quote!(#[serde(rename = #root)]));
        quote! {
            impl XmlRoot for #name {
                const NAME: &'static str = #root;
                const NAMESPACE: &'static str = #ns;
                const PREFIX: &'static str = #prefix;
            }

            #wrapper_doc
            #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
            #[serde(deny_unknown_fields)]
            pub struct #wrapper {
                /// The document.
                #rename
                pub #field: #name,
            }

            impl netapi_chat_runtime::wire::Document for #name {
                type Json = #wrapper;
                const JSON_NAMES: &'static [&'static str] = &[#(#json_names),*];
                const IS_LIST: bool = #is_list;
                fn from_json(wrapper: #wrapper) -> Self {
                    wrapper.#field
                }
            }

            impl From<#name> for #wrapper {
                fn from(#field: #name) -> Self {
                    #wrapper { #field }
                }
            }
        }
    })
}

/// Every key a document's JSON body can hold, sorted: its root name and the property names of
/// each struct it reaches (a list schema's one field is no key: the list is the value).
fn json_names(spec: &Spec, root: &str, st: &StructSchema) -> Vec<String> {
    fn walk<'s>(
        spec: &'s Spec,
        st: &'s StructSchema,
        seen: &mut std::collections::BTreeSet<&'s str>,
        names: &mut std::collections::BTreeSet<String>,
    ) {
        for f in &st.fields {
            if !st.bare_list {
                names.insert(f.name.clone());
            }
            let FieldType::Named(ty) = &f.ty else {
                continue;
            };
            if let Some(Schema {
                kind: SchemaKind::Struct(inner),
                ..
            }) = spec.schema(ty)
                && seen.insert(ty)
            {
                walk(spec, inner, seen, names);
            }
        }
    }
    let mut names = std::collections::BTreeSet::from([root.to_owned()]);
    walk(spec, st, &mut Default::default(), &mut names);
    names.into_iter().collect()
}

fn is_struct(spec: &Spec, ty: &FieldType) -> bool {
    match ty {
        FieldType::Named(n) => {
            matches!(spec.schema(n).map(|s| &s.kind), Some(SchemaKind::Struct(_)))
        }
        _ => false,
    }
}

/// `Notification`: one variant per schema a callback may carry, with what delivering one needs
/// (set the subscription's `callbackData`, encode in the subscription's format, its root name).
fn emit_notification_enum(spec: &Spec) -> TokenStream {
    if spec.notifications.is_empty() {
        return TokenStream::new();
    }
    let names: Vec<_> = spec.notifications.iter().map(|n| type_ident(n)).collect();
    let docs = spec.notifications.iter().map(|n| format!(" A `{n}`."));
    quote! {
        /// Any notification the spec's callbacks carry. The server stores records of its own
        /// (`server/src/chat/records.rs`), never this serde form. Variants are held inline,
        /// whatever their size: a notification is built once and moved into its delivery
        /// (boxing the largest would cost an allocation per notification to save bytes of
        /// queues that are bounded anyway).
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[allow(clippy::large_enum_variant)]
        pub enum Notification {
            #(
                #[doc = #docs]
                #names(#names),
            )*
        }

        impl Notification {
            /// Sets the `callbackData` the subscription asked to have echoed.
            pub fn set_callback_data(&mut self, data: Option<String>) {
                match self {
                    #(Notification::#names(n) => n.callback_data = data,)*
                }
            }

            /// Adds `link` after the notification's own links (the subscription's, at
            /// fan-out: one per subscription, as `callbackData`).
            pub fn push_link(&mut self, link: Link) {
                match self {
                    #(Notification::#names(n) => n.link.push(link),)*
                }
            }

            /// The body to POST to a callback, in `format`.
            pub fn encode(&self, format: netapi_chat_runtime::Format) -> Vec<u8> {
                match self {
                    #(Notification::#names(n) => netapi_chat_runtime::wire::encode(format, n),)*
                }
            }

            /// The root element name (for logs).
            pub fn kind(&self) -> &'static str {
                match self {
                    #(Notification::#names(_) => #names::NAME,)*
                }
            }
        }

        #(
            impl From<#names> for Notification {
                fn from(n: #names) -> Self {
                    Notification::#names(n)
                }
            }
        )*
    }
}
