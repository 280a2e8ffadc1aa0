//! Logs and request spans: one `tracing` pipeline, written on stderr and, as an option,
//! exported to an OpenTelemetry collector.
//!
//! - Our code logs with `tracing`'s macros. Dropshot logs through slog: the `slog::Logger` it
//!   is given ([`init`]) has [`SlogBridge`] as its drain, which turns each record into a
//!   `tracing` event with the record's and the logger's keys as fields.
//! - Each request runs inside one span ([`request_span`], made by dropshot's request-span hook,
//!   `vendor/dropshot/PATCHES.md` item 12): its `req_id` (the `x-request-id` answered), method,
//!   route and path, then, once answered ([`answered`]), its status and latency.
//! - [`Lines`] writes each event as one line on stderr, text or JSON
//!   (`NETAPI_CHAT_LOG_FORMAT`), at `NETAPI_CHAT_LOG_LEVEL`: `ts`, `level`, `msg`, `name`, the
//!   event's fields, then those of the spans it happened in, so every line of a request carries
//!   its `req_id`. The keys are the ones the slog JSON drain wrote before (`msg`, `level` as
//!   `INFO`/`WARN`/`ERRO`, `ts`, `name`). Span fields named with a dot (`http.route`,
//!   `otel.name`: OpenTelemetry attributes) are for traces, not for lines.
//! - With the `otel` feature and `NETAPI_CHAT_OTLP_ENDPOINT`, the request spans (and the
//!   warnings and errors inside them, as span events) are exported over OTLP/HTTP by a batch
//!   processor on a thread of its own; [`shutdown`] flushes it. The line's level does not filter
//!   them: spans have a filter of their own.

use crate::config::{Config, LogFormat};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The `target` of request spans, so that the exporter takes those and no other span.
pub const REQUEST_TARGET: &str = "netapi_chat::request";

/// The longest path a request span keeps (`url.path`): longer ones are cut (at a character
/// boundary), so that a client cannot make exported spans arbitrarily large.
const MAX_SPAN_PATH: usize = 512;

/// Whether the global subscriber is installed (once per process: a cluster's standby that
/// becomes leader starts the server a second time).
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Whether spans are exported: only then does a request span get its OpenTelemetry name (a
/// string made per request).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The tracer provider exporting spans, kept for [`shutdown`].
#[cfg(feature = "otel")]
static PROVIDER: Mutex<Option<opentelemetry_sdk::trace::SdkTracerProvider>> = Mutex::new(None);

/// What start and `check-config` refuse: an OTLP endpoint in a binary that cannot export.
pub fn check(config: &Config) -> Result<(), String> {
    if config.otlp_endpoint.is_some() && !cfg!(feature = "otel") {
        return Err(
            "NETAPI_CHAT_OTLP_ENDPOINT is set, but this netapi-chat was built without \
             OpenTelemetry export: build it with `cargo build --release --features otel`, \
             or unset the setting"
                .to_owned(),
        );
    }
    Ok(())
}

/// Installs the process's `tracing` subscriber (the first time; later calls keep it) and
/// returns the slog logger to give dropshot, bridged into it.
pub fn init(config: &Config) -> Result<slog::Logger, String> {
    check(config)?;
    // Start-up warnings written before this follow the same format.
    crate::data_dir::set_json_lines(config.log_format == LogFormat::Json);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if !*installed {
        install(config)?;
        *installed = true;
    }
    Ok(slog::Logger::root(SlogBridge, slog::o!()))
}

/// The level of `NETAPI_CHAT_LOG_LEVEL`.
fn level(config: &Config) -> Level {
    use dropshot::ConfigLoggingLevel as L;
    match config.log_level {
        L::Critical | L::Error => Level::ERROR,
        L::Warn => Level::WARN,
        L::Info => Level::INFO,
        L::Debug => Level::DEBUG,
        L::Trace => Level::TRACE,
    }
}

/// Sets the global subscriber: [`Lines`] on stderr, and the exporter when configured.
fn install(config: &Config) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt as _;
    let lines = Lines::new(config.log_format == LogFormat::Json, |line| {
        use std::io::Write as _;
        // A failed write (stderr closed) is dropped: logging must not stop the server.
        let _ = std::io::stderr().lock().write_all(line);
    })
    .with_filter(line_filter(level(config)));
    let subscriber = tracing_subscriber::registry().with(lines);
    #[cfg(feature = "otel")]
    let subscriber = subscriber.with(match &config.otlp_endpoint {
        Some(endpoint) => Some(otel::layer(endpoint)?),
        None => None,
    });
    tracing::subscriber::set_global_default(subscriber).map_err(|e| e.to_string())
}

/// What [`Lines`] sees: events at `level` or above, and every span (a span filtered out
/// would take its `req_id` off the lines of warnings inside it).
fn line_filter(
    level: Level,
) -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    let hint = std::cmp::max(level, Level::INFO);
    tracing_subscriber::filter::FilterFn::new(move |m| m.is_span() || *m.level() <= level)
        .with_max_level_hint(hint)
}

/// Flushes and stops the span exporter, if any (blocking: at most the exporter's timeout).
pub fn shutdown() {
    #[cfg(feature = "otel")]
    {
        let provider = PROVIDER.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(provider) = provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}

/// The OpenTelemetry exporter (`otel` feature).
#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use tracing::Subscriber;
    use tracing_subscriber::Layer;
    use tracing_subscriber::registry::LookupSpan;

    /// The layer exporting request spans to `endpoint` (`http://host:port`: spans are POSTed
    /// to its `/v1/traces`, protobuf), and warnings and errors inside them as span events.
    pub fn layer<S>(endpoint: &str) -> Result<impl Layer<S> + Send + Sync, String>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .build()
            .map_err(|e| format!("NETAPI_CHAT_OTLP_ENDPOINT: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("netapi-chat")
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("netapi-chat");
        *super::PROVIDER.lock().unwrap_or_else(|e| e.into_inner()) = Some(provider);
        super::EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        let filter = tracing_subscriber::filter::FilterFn::new(|m| {
            if m.is_span() {
                m.target() == super::REQUEST_TARGET
            } else {
                *m.level() <= tracing::Level::WARN
            }
        });
        Ok(tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_filter(filter))
    }
}

// ------------------------------------------------------------------------- request spans

/// The span a request runs in (dropshot's request-span hook): `req_id`, and the OpenTelemetry
/// HTTP server attributes known before routing (method, route template, path). `routes` gives
/// a path's route template (`None`: not a route of this server).
pub fn request_span(
    routes: Arc<crate::gate::Methods>,
) -> impl Fn(&http::Method, &str, &str) -> tracing::Span + Send + Sync + 'static {
    move |method, path, req_id| {
        let method = otel_method(method);
        let route = routes.template(path);
        let name = EXPORTING
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| match route {
                Some(route) => format!("{method} {route}"),
                None => method.to_owned(),
            });
        let span = tracing::info_span!(
            target: REQUEST_TARGET,
            "request",
            req_id,
            http.request.method = method,
            http.route = tracing::field::Empty,
            url.path = cut(path, MAX_SPAN_PATH),
            http.response.status_code = tracing::field::Empty,
            latency_us = tracing::field::Empty,
            otel.name = name.as_deref(),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
        );
        if let Some(route) = route {
            span.record("http.route", route);
        }
        span
    }
}

/// Records the answer on the current request span: status, latency, and the error status
/// OpenTelemetry gives a server span on a 5xx.
pub fn answered(status: u16, took: std::time::Duration) {
    let span = tracing::Span::current();
    span.record("http.response.status_code", status);
    span.record(
        "latency_us",
        u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
    );
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// The method as OpenTelemetry names it: a known one, else `_OTHER` (a client's arbitrary
/// token is not an attribute value).
fn otel_method(method: &http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT",
    ];
    KNOWN
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or("_OTHER")
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

// ------------------------------------------------------------------------------- lines

/// A field's value as a line writes it.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl Val {
    fn json(&self) -> serde_json::Value {
        match self {
            Val::Str(s) => serde_json::Value::from(s.as_str()),
            Val::I64(n) => serde_json::Value::from(*n),
            Val::U64(n) => serde_json::Value::from(*n),
            Val::F64(n) => serde_json::Number::from_f64(*n)
                .map_or_else(|| serde_json::Value::from(n.to_string()), Into::into),
            Val::Bool(b) => serde_json::Value::from(*b),
        }
    }
}

/// A span's fields, kept in its extensions for the lines of the events inside it.
struct SpanFields(Vec<(&'static str, Val)>);

/// Collects an event's or a span's fields (the message apart).
#[derive(Default)]
struct Collect {
    message: Option<String>,
    fields: Vec<(&'static str, Val)>,
}

impl Collect {
    fn put(&mut self, field: &Field, value: Val) {
        if field.name() == "message" {
            self.message = Some(match value {
                Val::Str(s) => s,
                other => format!("{other:?}"),
            });
            return;
        }
        match self.fields.iter_mut().find(|(k, _)| *k == field.name()) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((field.name(), value)),
        }
    }
}

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Val::Str(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Val::Str(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Val::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Val::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Val::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Val::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Val::Str(value.to_string()));
    }
}

/// Where a finished line goes (stderr; a buffer in tests).
type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// The layer writing one line per event, text or JSON (see the module documentation).
pub struct Lines {
    json: bool,
    sink: Sink,
}

impl Lines {
    fn new(json: bool, sink: impl Fn(&[u8]) + Send + Sync + 'static) -> Lines {
        Lines {
            json,
            sink: Box::new(sink),
        }
    }
}

impl<S> Layer<S> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut c = Collect::default();
        attrs.record(&mut c);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(c.fields));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<SpanFields>() {
            let mut c = Collect {
                message: None,
                fields: std::mem::take(&mut fields.0),
            };
            values.record(&mut c);
            fields.0 = c.fields;
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut c = Collect::default();
        event.record(&mut c);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.0 {
                        if !k.contains('.') && !c.fields.iter().any(|(n, _)| n == k) {
                            c.fields.push((k, v.clone()));
                        }
                    }
                }
            }
        }
        let line = render(
            self.json,
            *event.metadata().level(),
            std::time::SystemTime::now(),
            c.message.as_deref().unwrap_or_default(),
            &c.fields,
        );
        (self.sink)(line.as_bytes());
    }
}

/// slog's short level names, which the lines have always used.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERRO",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBG",
        Level::TRACE => "TRCE",
    }
}

/// One line (with its `\n`): a JSON object (`msg`, `level`, `ts`, `name`, then the fields),
/// or `ts LEVEL msg key=value…` with control characters escaped, so that no value can start a
/// line of its own.
fn render(
    json: bool,
    level: Level,
    now: std::time::SystemTime,
    message: &str,
    fields: &[(&'static str, Val)],
) -> String {
    let ts = humantime::format_rfc3339_micros(now).to_string();
    if json {
        let mut line = serde_json::Map::new();
        line.insert("msg".into(), message.into());
        line.insert("level".into(), level_name(level).into());
        line.insert("ts".into(), ts.into());
        line.insert("name".into(), "netapi-chat".into());
        for (k, v) in fields {
            line.entry(*k).or_insert_with(|| v.json());
        }
        let mut text = serde_json::Value::Object(line).to_string();
        text.push('\n');
        return text;
    }
    let mut line = format!("{ts} {} ", level_name(level));
    escape_into(&mut line, message);
    for (k, v) in fields {
        let _ = write!(line, " {k}=");
        match v {
            Val::Str(s) if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"') => {
                line.push('"');
                escape_into(&mut line, &s.replace('"', "\\\""));
                line.push('"');
            }
            Val::Str(s) => escape_into(&mut line, s),
            Val::I64(n) => {
                let _ = write!(line, "{n}");
            }
            Val::U64(n) => {
                let _ = write!(line, "{n}");
            }
            Val::F64(n) => {
                let _ = write!(line, "{n}");
            }
            Val::Bool(b) => {
                let _ = write!(line, "{b}");
            }
        }
    }
    line.push('\n');
    line
}

/// Appends `text` with its control characters escaped (`\n`, `\r`, `\t`, `\u{1b}`…).
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

// --------------------------------------------------------------------------- slog bridge

/// The keys dropshot's records carry, each a field of the bridged event (so that a JSON line
/// has `req_id`, `response_code`… as keys of their own); any other key goes into `kv` as
/// `key=value` pairs. `message` is the record's message.
const SLOG_FIELDS: &[&str] = &[
    "message",
    "req_id",
    "method",
    "uri",
    "remote_addr",
    "client_addr",
    "local_addr",
    "response_code",
    "latency_us",
    "error_message_internal",
    "error_message_external",
    "error",
    "err",
    "path",
    "status",
    "version",
    "versions",
    "body",
    "error_body",
    "http_client",
    "upgrade",
    "gzip",
    "failed_handshakes",
    "logged_every_secs",
    "kv",
];

/// One callsite per slog level for the bridged events (target `dropshot`).
macro_rules! slog_callsite {
    ($level:expr, $cs:ident, $meta:ident, $ty:ident) => {
        struct $ty;
        static $cs: $ty = $ty;
        static $meta: tracing::Metadata<'static> = tracing::Metadata::new(
            "slog record",
            "dropshot",
            $level,
            None,
            None,
            None,
            tracing::field::FieldSet::new(SLOG_FIELDS, tracing_core::identify_callsite!(&$cs)),
            tracing_core::metadata::Kind::EVENT,
        );
        impl tracing_core::callsite::Callsite for $ty {
            fn set_interest(&self, _: tracing_core::subscriber::Interest) {}
            fn metadata(&self) -> &'static tracing::Metadata<'static> {
                &$meta
            }
        }
    };
}

slog_callsite!(Level::ERROR, ERROR_CS, ERROR_META, ErrorCallsite);
slog_callsite!(Level::WARN, WARN_CS, WARN_META, WarnCallsite);
slog_callsite!(Level::INFO, INFO_CS, INFO_META, InfoCallsite);
slog_callsite!(Level::DEBUG, DEBUG_CS, DEBUG_META, DebugCallsite);
slog_callsite!(Level::TRACE, TRACE_CS, TRACE_META, TraceCallsite);

/// The metadata of a bridged record of `level` (critical is an error).
fn slog_metadata(level: slog::Level) -> &'static tracing::Metadata<'static> {
    match level {
        slog::Level::Critical | slog::Level::Error => &ERROR_META,
        slog::Level::Warning => &WARN_META,
        slog::Level::Info => &INFO_META,
        slog::Level::Debug => &DEBUG_META,
        slog::Level::Trace => &TRACE_META,
    }
}

/// The slog drain dropshot logs into: each record becomes a `tracing` event of the same level,
/// in the current span (the request's, for a request's records), with the record's keys and
/// then its logger's (the first of a key wins, as in slog's own drains).
pub struct SlogBridge;

impl slog::Drain for SlogBridge {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        use slog::KV as _;
        let meta = slog_metadata(record.level());
        tracing::dispatcher::get_default(|dispatch| {
            // Asked first: per-layer filters decide here.
            if !dispatch.enabled(meta) {
                return;
            }
            let mut kv = SlogValues::default();
            let _ = record.kv().serialize(record, &mut kv);
            let _ = values.serialize(record, &mut kv);
            let message = *record.msg();
            let rest = (!kv.rest.is_empty()).then_some(kv.rest.as_str());
            let mut slots: Vec<Option<&dyn tracing::Value>> = Vec::with_capacity(SLOG_FIELDS.len());
            for (i, name) in SLOG_FIELDS.iter().enumerate() {
                slots.push(match *name {
                    "message" => Some(&message as &dyn tracing::Value),
                    "kv" => rest.as_ref().map(|r| r as &dyn tracing::Value),
                    _ => kv.known[i].as_ref().map(|v| match v {
                        Val::Str(s) => s as &dyn tracing::Value,
                        Val::I64(n) => n as &dyn tracing::Value,
                        Val::U64(n) => n as &dyn tracing::Value,
                        Val::F64(n) => n as &dyn tracing::Value,
                        Val::Bool(b) => b as &dyn tracing::Value,
                    }),
                });
            }
            let values = meta.fields().value_set_all(&slots);
            dispatch.event(&Event::new(meta, &values));
        });
        Ok(())
    }
}

/// A record's keys and values, by [`SLOG_FIELDS`] position; the others as text.
struct SlogValues {
    known: Vec<Option<Val>>,
    rest: String,
}

impl Default for SlogValues {
    fn default() -> Self {
        SlogValues {
            known: vec![None; SLOG_FIELDS.len()],
            rest: String::new(),
        }
    }
}

impl SlogValues {
    fn put(&mut self, key: &str, value: impl FnOnce() -> Val) {
        let at = SLOG_FIELDS
            .iter()
            .position(|f| *f == key && *f != "message" && *f != "kv");
        match at {
            Some(i) if self.known[i].is_none() => self.known[i] = Some(value()),
            Some(_) => {}
            None => {
                let v = match value() {
                    Val::Str(s) => s,
                    other => other.json().to_string(),
                };
                if !self.rest.is_empty() {
                    self.rest.push(' ');
                }
                let _ = write!(self.rest, "{key}={v}");
            }
        }
    }
}

impl slog::Serializer for SlogValues {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        self.put(key.as_ref(), || Val::Str(val.to_string()));
        Ok(())
    }
    fn emit_str(&mut self, key: slog::Key, val: &str) -> slog::Result {
        self.put(key.as_ref(), || Val::Str(val.to_owned()));
        Ok(())
    }
    fn emit_u8(&mut self, key: slog::Key, val: u8) -> slog::Result {
        self.put(key.as_ref(), || Val::U64(val.into()));
        Ok(())
    }
    fn emit_u16(&mut self, key: slog::Key, val: u16) -> slog::Result {
        self.put(key.as_ref(), || Val::U64(val.into()));
        Ok(())
    }
    fn emit_u32(&mut self, key: slog::Key, val: u32) -> slog::Result {
        self.put(key.as_ref(), || Val::U64(val.into()));
        Ok(())
    }
    fn emit_u64(&mut self, key: slog::Key, val: u64) -> slog::Result {
        self.put(key.as_ref(), || Val::U64(val));
        Ok(())
    }
    fn emit_usize(&mut self, key: slog::Key, val: usize) -> slog::Result {
        self.put(key.as_ref(), || Val::U64(val as u64));
        Ok(())
    }
    fn emit_u128(&mut self, key: slog::Key, val: u128) -> slog::Result {
        self.put(key.as_ref(), || match u64::try_from(val) {
            Ok(n) => Val::U64(n),
            Err(_) => Val::Str(val.to_string()),
        });
        Ok(())
    }
    fn emit_i8(&mut self, key: slog::Key, val: i8) -> slog::Result {
        self.put(key.as_ref(), || Val::I64(val.into()));
        Ok(())
    }
    fn emit_i16(&mut self, key: slog::Key, val: i16) -> slog::Result {
        self.put(key.as_ref(), || Val::I64(val.into()));
        Ok(())
    }
    fn emit_i32(&mut self, key: slog::Key, val: i32) -> slog::Result {
        self.put(key.as_ref(), || Val::I64(val.into()));
        Ok(())
    }
    fn emit_i64(&mut self, key: slog::Key, val: i64) -> slog::Result {
        self.put(key.as_ref(), || Val::I64(val));
        Ok(())
    }
    fn emit_isize(&mut self, key: slog::Key, val: isize) -> slog::Result {
        self.put(key.as_ref(), || Val::I64(val as i64));
        Ok(())
    }
    fn emit_bool(&mut self, key: slog::Key, val: bool) -> slog::Result {
        self.put(key.as_ref(), || Val::Bool(val));
        Ok(())
    }
    fn emit_f64(&mut self, key: slog::Key, val: f64) -> slog::Result {
        self.put(key.as_ref(), || Val::F64(val));
        Ok(())
    }
    fn emit_f32(&mut self, key: slog::Key, val: f32) -> slog::Result {
        self.put(key.as_ref(), || Val::F64(val.into()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Runs `f` under a subscriber of [`Lines`] (at `level`) and returns what it wrote.
    fn lines_of(json: bool, level: Level, f: impl FnOnce()) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        let lines = Lines::new(json, move |l| sink.lock().unwrap().extend_from_slice(l))
            .with_filter(line_filter(level));
        let subscriber = tracing_subscriber::registry().with(lines);
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(out.lock().unwrap().clone()).unwrap()
    }

    fn json_lines(text: &str) -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// A dropshot record keeps its keys (typed) and its logger's, and the request span's
    /// `req_id` reaches our own events inside it; OpenTelemetry attributes stay off lines.
    #[test]
    fn slog_records_and_events_in_a_request_span_carry_its_fields() {
        let routes = Arc::new(crate::gate::Methods::default());
        let text = lines_of(true, Level::INFO, || {
            let span = request_span(routes)(&http::Method::GET, "/x", "rid-1");
            let _in = span.enter();
            let log = slog::Logger::root(
                SlogBridge,
                slog::o!("req_id" => "rid-1", "method" => "GET", "hdr_x" => "h"),
            );
            slog::info!(log, "request completed"; "response_code" => 200u16, "latency_us" => 17u128);
            slog::debug!(log, "not at info");
            tracing::warn!(user = "tel:+1", "ours");
            answered(503, std::time::Duration::from_micros(9));
            tracing::info!("after the answer");
        });
        let lines = json_lines(&text);
        assert_eq!(lines.len(), 3, "{text}");
        let l = &lines[0];
        assert_eq!(l["msg"], "request completed", "{l}");
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["name"], "netapi-chat");
        assert_eq!(l["req_id"], "rid-1");
        assert_eq!(l["method"], "GET");
        assert_eq!(l["response_code"], 200);
        assert_eq!(l["latency_us"], 17);
        assert_eq!(l["kv"], "hdr_x=h");
        assert!(l["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
        assert!(
            l.get("http.request.method").is_none() && l.get("otel.name").is_none(),
            "{l}"
        );
        assert_eq!(lines[1]["msg"], "ours");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["user"], "tel:+1");
        assert_eq!(
            lines[1]["req_id"], "rid-1",
            "our event carries the span's req_id"
        );
        assert_eq!(lines[2]["latency_us"], 9, "recorded on the span");
    }

    /// The keys of dropshot's TLS handshake warning are fields of their own, not `key=value`
    /// pairs nested in `kv` (an operator review found `kv="logged_every_secs=10
    /// failed_handshakes=1"`, which a log query cannot filter on).
    #[test]
    fn the_tls_handshake_warning_has_fields_of_its_own() {
        let text = lines_of(true, Level::INFO, || {
            let log = slog::Logger::root(SlogBridge, slog::o!());
            slog::warn!(log, "tls accept err: received corrupt message";
                "remote_addr" => "192.0.2.7:4000",
                "failed_handshakes" => 3u64,
                "logged_every_secs" => 10u64);
        });
        let lines = json_lines(&text);
        assert_eq!(lines.len(), 1, "{text}");
        let l = &lines[0];
        assert_eq!(l["failed_handshakes"], 3, "{l}");
        assert_eq!(l["logged_every_secs"], 10, "{l}");
        assert!(l.get("kv").is_none(), "{l}");
    }

    /// At `warn`, info events are dropped but the span is still seen: a warning inside a
    /// request carries its `req_id`.
    #[test]
    fn the_level_filters_events_not_the_request_span() {
        let routes = Arc::new(crate::gate::Methods::default());
        let text = lines_of(false, Level::WARN, || {
            let span = request_span(routes)(&http::Method::POST, "/y", "rid-2");
            let _in = span.enter();
            tracing::info!("hidden");
            tracing::error!(error = "disk full", "store failed");
        });
        let line = text.trim_end();
        assert!(!text.contains("hidden"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            line.ends_with(" ERRO store failed error=\"disk full\" req_id=rid-2"),
            "{line}"
        );
    }

    /// Text lines escape control characters (no value starts a line), quote values with
    /// spaces, and keep a value's backslashes as they are.
    #[test]
    fn text_lines_are_one_line_each() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
        let line = render(
            false,
            Level::INFO,
            at,
            "refused\nFORGED",
            &[
                ("url", Val::Str("http://a/\r\nX \"q\"".into())),
                ("esc", Val::Str("\\r\\n".into())),
                ("n", Val::U64(3)),
                ("empty", Val::Str(String::new())),
            ],
        );
        assert_eq!(
            line,
            "1970-01-01T00:00:01.000000Z INFO refused\\nFORGED url=\"http://a/\\r\\nX \\\"q\\\"\" esc=\\r\\n n=3 empty=\"\"\n"
        );
        let json = render(true, Level::ERROR, at, "a\nb", &[("n", Val::F64(f64::NAN))]);
        let v: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
        assert_eq!(v["msg"], "a\nb");
        assert_eq!(v["level"], "ERRO");
        assert_eq!(v["n"], "NaN");
        assert_eq!(json.matches('\n').count(), 1);
    }

    #[test]
    fn span_paths_are_cut_at_a_character_boundary() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(
            otel_method(&http::Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
        assert_eq!(otel_method(&http::Method::GET), "GET");
    }

    /// Without the `otel` feature an endpoint is refused with a message saying so.
    #[test]
    fn an_endpoint_without_the_feature_is_refused() {
        let config = Config {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            ..Config::default()
        };
        let checked = check(&config);
        if cfg!(feature = "otel") {
            assert!(checked.is_ok());
        } else {
            let e = checked.unwrap_err();
            assert!(e.contains("built without OpenTelemetry export"), "{e}");
        }
        assert!(check(&Config::default()).is_ok());
    }
}
