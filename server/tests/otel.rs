//! Issue 17 item 3, OpenTelemetry export (built with `--features otel`; `cargo xtask test` runs
//! it): the real binary with `NETAPI_CHAT_OTLP_ENDPOINT` pointing at a fake collector in this
//! test (an HTTP listener that keeps every OTLP/HTTP body and decodes its protobuf
//! `ExportTraceServiceRequest` with a small wire-format reader, independent of the exporter's
//! crates). A flow runs, the server stops gracefully (which flushes the spans), and each request
//! the client made is one server span carrying the request id the client saw in
//! `x-request-id`, with the HTTP attributes of OpenTelemetry's semantic conventions.

mod support;

use netapi_chat_runtime::Format;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use support::{Server, send};

/// The bodies POSTed to the fake collector, with their path and content type.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Starts the fake collector on a free loopback port: every request is kept and answered
/// 200 with an empty `ExportTraceServiceResponse`.
async fn collector() -> (String, Received) {
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let kept = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let kept = Arc::clone(&kept);
                        async move {
                            let path = req.uri().path().to_owned();
                            let kind = req
                                .headers()
                                .get(http::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = match req.into_body().collect().await {
                                Ok(b) => b.to_bytes().to_vec(),
                                Err(e) => format!("unreadable body: {e}").into_bytes(),
                            };
                            kept.lock().unwrap().push((path, kind, body));
                            let mut answer =
                                http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                            answer.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/x-protobuf"),
                            );
                            Ok::<_, std::convert::Infallible>(answer)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), received)
}

// ------------------------------------------------------------- protobuf wire format reader

/// One field of a protobuf message: its number and value.
#[derive(Debug)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

/// Reads a varint at `*at`.
fn varint(buf: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = buf[*at];
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
    }
    value
}

/// The fields of one message, in order (panics on a malformed one: the test fails).
fn fields(buf: &[u8]) -> Vec<(u64, Wire<'_>)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < buf.len() {
        let tag = varint(buf, &mut at);
        let value = match tag & 7 {
            0 => Wire::Varint(varint(buf, &mut at)),
            1 => {
                at += 8;
                Wire::Fixed64(u64::from_le_bytes(buf[at - 8..at].try_into().unwrap()))
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut at)).unwrap();
                at += len;
                Wire::Bytes(&buf[at - len..at])
            }
            5 => {
                at += 4;
                Wire::Fixed32
            }
            other => panic!("wire type {other}"),
        };
        out.push((tag >> 3, value));
    }
    out
}

/// The length-delimited fields numbered `n` of a message.
fn messages(buf: &[u8], n: u64) -> Vec<&[u8]> {
    fields(buf)
        .into_iter()
        .filter_map(|(k, v)| match v {
            Wire::Bytes(b) if k == n => Some(b),
            _ => None,
        })
        .collect()
}

/// An attribute value (`AnyValue`): a string or an integer, as text.
fn any_value(buf: &[u8]) -> String {
    match fields(buf).into_iter().next() {
        Some((1, Wire::Bytes(s))) => String::from_utf8(s.to_vec()).unwrap(),
        Some((2, Wire::Varint(b))) => (b != 0).to_string(),
        Some((3, Wire::Varint(n))) => (n as i64).to_string(),
        Some((4, Wire::Fixed64(f))) => f64::from_bits(f).to_string(),
        other => format!("{other:?}"),
    }
}

/// One exported span: name, kind, status code, attributes, timestamps.
#[derive(Debug)]
struct Span {
    name: String,
    kind: u64,
    status_code: u64,
    attributes: HashMap<String, String>,
    start: u64,
    end: u64,
}

/// The spans of an `ExportTraceServiceRequest` (resource_spans 1 → scope_spans 2 → spans 2),
/// and the resource attributes of each.
fn spans(body: &[u8]) -> Vec<(HashMap<String, String>, Span)> {
    let attributes = |msg: &[u8], n: u64| -> HashMap<String, String> {
        messages(msg, n)
            .into_iter()
            .map(|kv| {
                let key = messages(kv, 1)
                    .first()
                    .map(|k| String::from_utf8(k.to_vec()).unwrap());
                let value = messages(kv, 2).first().map(|v| any_value(v));
                (key.unwrap_or_default(), value.unwrap_or_default())
            })
            .collect()
    };
    let mut out = Vec::new();
    for resource_spans in messages(body, 1) {
        let resource = messages(resource_spans, 1)
            .first()
            .map(|r| attributes(r, 1))
            .unwrap_or_default();
        for scope_spans in messages(resource_spans, 2) {
            for span in messages(scope_spans, 2) {
                let mut s = Span {
                    name: String::new(),
                    kind: 0,
                    status_code: 0,
                    attributes: attributes(span, 9),
                    start: 0,
                    end: 0,
                };
                for (k, v) in fields(span) {
                    match (k, v) {
                        (5, Wire::Bytes(n)) => s.name = String::from_utf8(n.to_vec()).unwrap(),
                        (6, Wire::Varint(kind)) => s.kind = kind,
                        (7, Wire::Fixed64(t)) => s.start = t,
                        (8, Wire::Fixed64(t)) => s.end = t,
                        (15, Wire::Bytes(status)) => {
                            for (sk, sv) in fields(status) {
                                if let (3, Wire::Varint(code)) = (sk, sv) {
                                    s.status_code = code;
                                }
                            }
                        }
                        _ => {}
                    }
                }
                out.push((resource.clone(), s));
            }
        }
    }
    out
}

/// The request id a response carried.
fn request_id(a: &support::Answer) -> String {
    a.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A flow of requests (created, listed in JSON and XML, a 404, a gate 405, one with no id
/// of the client's): after the graceful stop, each is one server span at the collector, named
/// by method and route, carrying the request id the client saw and the status it got.
// Multi-threaded: the collector answers while the test blocks waiting for the server to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_the_collector_with_the_request_ids_clients_saw() {
    let (endpoint, received) = collector().await;
    let server = Server::start(&[("NETAPI_CHAT_OTLP_ENDPOINT", &endpoint)]);
    let user = "tel:+15550001111";
    let subs = server.urls().subscriptions(user);
    let body = support::docs::encode(
        Format::Json,
        &support::docs::subscription("http://127.0.0.1:10/notify"),
    );
    let json = ("content-type", "application/json");

    let created = send(
        "POST",
        &subs,
        &[json, ("x-request-id", "otel-create-1")],
        Some(&body),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let listed = send("GET", &subs, &[("x-request-id", "otel-list-json")], None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let xml = send(
        "GET",
        &subs,
        &[
            ("accept", "application/xml"),
            ("x-request-id", "otel-list-xml"),
        ],
        None,
    )
    .await;
    assert_eq!(xml.status, 200, "{}", xml.body);
    let missing = send(
        "GET",
        &format!("{subs}/no-such-subscription"),
        &[("x-request-id", "otel-missing")],
        None,
    )
    .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let refused = send("DELETE", &subs, &[("x-request-id", "otel-405")], None).await;
    assert_eq!(refused.status, 405, "{}", refused.body);
    let generated = send("GET", &subs, &[], None).await;
    assert_eq!(generated.status, 200, "{}", generated.body);
    let generated_id = request_id(&generated);
    assert!(!generated_id.is_empty());

    let expected = [
        ("otel-create-1", "POST", 201),
        ("otel-list-json", "GET", 200),
        ("otel-list-xml", "GET", 200),
        ("otel-missing", "GET", 404),
        ("otel-405", "DELETE", 405),
        (generated_id.as_str(), "GET", 200),
    ];
    for (answer, (id, _, _)) in [&created, &listed, &xml, &missing, &refused, &generated]
        .into_iter()
        .zip(expected)
    {
        assert_eq!(request_id(answer), id, "x-request-id echoed");
    }

    // The graceful stop flushes what the batch processor still holds.
    let dir = server.terminate();
    let _ = std::fs::remove_dir_all(&dir);
    let bodies = received.lock().unwrap().clone();
    assert!(!bodies.is_empty(), "nothing reached the collector");
    let mut all = Vec::new();
    for (path, kind, body) in &bodies {
        assert_eq!(path, "/v1/traces");
        assert_eq!(kind, "application/x-protobuf");
        all.extend(spans(body));
    }
    let route = "/v1/chat/{userId}/subscriptions";
    for (id, method, status) in expected {
        let found: Vec<_> = all
            .iter()
            .filter(|(_, s)| s.attributes.get("req_id").map(String::as_str) == Some(id))
            .collect();
        assert_eq!(found.len(), 1, "one span for {id} in {all:#?}");
        let (resource, span) = found[0];
        assert_eq!(
            resource.get("service.name").map(String::as_str),
            Some("netapi-chat")
        );
        let a = &span.attributes;
        assert_eq!(
            a.get("http.request.method").map(String::as_str),
            Some(method),
            "{span:?}"
        );
        assert_eq!(
            a.get("http.response.status_code").map(String::as_str),
            Some(status.to_string().as_str()),
            "{span:?}"
        );
        assert_eq!(span.kind, 2, "SPAN_KIND_SERVER: {span:?}");
        assert!(span.end >= span.start && span.start > 0, "{span:?}");
        assert!(a.contains_key("latency_us"), "{span:?}");
        assert!(
            !a.contains_key("otel.name"),
            "special fields are not attributes: {span:?}"
        );
        if id == "otel-missing" {
            assert_eq!(
                span.name,
                format!("GET {route}/{{subscriptionId}}"),
                "{span:?}"
            );
            assert!(a["url.path"].ends_with("/no-such-subscription"), "{span:?}");
        } else {
            assert_eq!(span.name, format!("{method} {route}"), "{span:?}");
            assert_eq!(
                a.get("http.route").map(String::as_str),
                Some(route),
                "{span:?}"
            );
        }
        // No 5xx here: no span is marked as an error.
        assert_ne!(span.status_code, 2, "{span:?}");
    }
}
