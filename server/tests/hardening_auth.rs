//! Hardening of what clients give the server (issue 11, items 10–12), against the real binary:
//! a `notifyURL` with CR/LF is refused and never reaches the operator's log raw (log forging);
//! every refused or unknown callback host gets one text that names no address (DNS oracle);
//! JWT registered claims have RFC 7519's types (`iss` and `sub` one string), and users named by
//! an array only through a custom user claim, as the README says.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use netapi_chat_runtime::Format;
use serde_json::{Value, json};
use support::{Server, send, send_authorized, temp_data_dir};

const ALICE: &str = "tel:+15551230001";
const BOB: &str = "sip:bob@example.com";
const FORMATS: [Format; 2] = [Format::Json, Format::Xml];

/// A subscription request body with this `notifyURL`, in `format`, written by hand so that
/// control characters travel as the client sent them (`&#13;` in XML keeps a CR that a literal
/// CR would lose to XML line-end normalization).
fn subscription_body(format: Format, notify_url: &str) -> String {
    match format {
        Format::Json => json!({"chatSubscription": {"callbackReference": {
            "notifyURL": notify_url, "callbackData": "app"}}})
        .to_string(),
        Format::Xml => {
            let mut text = String::new();
            for c in notify_url.chars() {
                match c {
                    '&' => text.push_str("&amp;"),
                    '<' => text.push_str("&lt;"),
                    c if c.is_control() => text.push_str(&format!("&#{};", u32::from(c))),
                    c => text.push(c),
                }
            }
            format!(
                "<chat:chatSubscription xmlns:chat=\"urn:oma:xml:rest:netapi:chat:1\">\
                 <callbackReference><notifyURL>{text}</notifyURL>\
                 <callbackData>app</callbackData></callbackReference></chat:chatSubscription>"
            )
        }
    }
}

async fn subscribe(url: &str, format: Format, notify_url: &str) -> support::Answer {
    let body = subscription_body(format, notify_url);
    send(
        "POST",
        url,
        &[
            ("content-type", format.media_type()),
            ("accept", format.media_type()),
        ],
        Some(&body),
    )
    .await
}

/// The text of an OMA error (its variables).
fn error_text(answer: &support::Answer, format: Format) -> String {
    answer
        .assert_error(400, "SVC0002", format)
        .service_exception
        .map(|x| x.variables.join(" "))
        .unwrap_or_default()
}

#[tokio::test]
async fn notify_url_with_control_characters_is_refused_and_never_logged_raw() {
    let srv = Server::logged(&[]);
    let forged = "FORGED Dec 03 14:00:00.000 WARN netapi-chat: admin token rotated";
    for f in FORMATS {
        for bad in [
            format!("http://127.0.0.1:10/cb\r\n{forged}"),
            format!("http://127.0.0.1:10/cb\n{forged}"),
            format!("http://127.0.0.1:10/cb\r{forged}"),
            "http://127.0.0.1:10/c\tb".to_owned(),
            "http://127.0.0.1:10/cb\u{1b}[2J".to_owned(),
        ] {
            let a = subscribe(&srv.urls().subscriptions(ALICE), f, &bad).await;
            let text = error_text(&a, f);
            // XML 1.0 cannot carry ESC at all: there the XML reader refuses it first.
            let xml_refused = f == Format::Xml && text.contains("malformed XML");
            assert!(
                xml_refused || (text.contains("notifyURL") && text.contains("control character")),
                "{f:?} {bad:?}: {text}"
            );
            assert!(!text.contains(['\r', '\n', '\u{1b}']), "{text:?}");
        }
    }
    // A clean URL still works (and is logged), and a pretty-printed XML value keeps working.
    let a = subscribe(
        &srv.urls().subscriptions(ALICE),
        Format::Xml,
        "\n    http://127.0.0.1:10/cb\n  ",
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let a = subscribe(
        &srv.urls().subscriptions(BOB),
        Format::Json,
        "http://127.0.0.1:10/ok",
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);

    let log = wait_for_log(&srv, "subscription created").await;
    for line in log.lines() {
        assert!(
            !line.trim_start().starts_with("FORGED"),
            "a client's text began a log line:\n{log}"
        );
    }
    assert!(!log.contains('\u{1b}'), "raw ESC in the log:\n{log}");
    // The operator still sees what was refused, escaped.
    assert!(
        log.contains("notifyURL refused") && log.contains("\\r\\nFORGED"),
        "{log}"
    );
}

/// A callback URL's credentials never reach the log: no `user:password@`, no query or
/// fragment (receivers carry keys there, `?api_key=…`); the operator still sees where it
/// goes, and that there was a query.
#[tokio::test]
async fn a_callback_urls_credentials_are_never_logged() {
    let srv = Server::logged(&[]);
    // Refused (credentials in a callback URL are), and logged as refused.
    let a = subscribe(
        &srv.urls().subscriptions(ALICE),
        Format::Json,
        "http://hook:pa55word@127.0.0.1:10/in",
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = subscribe(
        &srv.urls().subscriptions(ALICE),
        Format::Json,
        "http://127.0.0.1:10/in?api_key=S3CRETKEY#frag",
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let log = wait_for_log(&srv, "subscription created").await;
    assert!(log.contains("notifyURL refused"), "{log}");
    for secret in ["pa55word", "S3CRETKEY", "frag", "hook:"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    assert!(log.contains("http://127.0.0.1:10/in?…"), "{log}");
}

/// The log once it holds `needle` (a few seconds at most: the terminal drain is asynchronous).
async fn wait_for_log(srv: &Server, needle: &str) -> String {
    for _ in 0..50 {
        let log = srv.log_text();
        if log.contains(needle) {
            return log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    srv.log_text()
}

#[tokio::test]
async fn refused_and_unknown_callback_hosts_get_one_text_naming_no_address() {
    let srv = Server::logged(&[("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "0")]);
    let mut urls = vec![
        "http://10.0.0.5/notify".to_owned(),
        "http://127.0.0.1:10/notify".to_owned(),
        "http://localhost:10/notify".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::ffff:192.168.0.1]/notify".to_owned(),
        // RFC 6761: never resolves.
        "http://no-such-host.invalid/notify".to_owned(),
    ];
    // A DNS name that resolves to loopback (this machine's host name, in /etc/hosts), when it
    // does here: refused after resolution, the case that used to name the address.
    let (host, resolved) = support::host_name_addresses().await;
    if !host.is_empty() && !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()) {
        urls.push(format!("http://{host}:10/notify"));
    }
    let expected = "callbackReference.notifyURL: notifyURL is not an allowed callback host (a callback needs a public address: loopback, private, link-local and reserved ones, and names that do not resolve, are refused unless the server allows them)";
    for f in FORMATS {
        for url in &urls {
            let a = subscribe(&srv.urls().subscriptions(ALICE), f, url).await;
            let text = error_text(&a, f);
            assert_eq!(text, expected, "{f:?} {url}");
        }
    }
    // The operator's log says which address and why.
    let log = wait_for_log(&srv, "10.0.0.5").await;
    assert!(
        log.contains("notifyURL refused") && log.contains("private-network"),
        "{log}"
    );
}

// --- JWT ------------------------------------------------------------------------------------

/// A P-256 key generated once with OpenSSL 3 for tests only (the `EC_1` test key of
/// `server/src/auth/jwt.rs`): PKCS#8 DER, base64, and its public point.
const EC_PKCS8: &str = "
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJLFtJVKXciaWxjV253yX3hlDHkHy
ZnA0B70KRosAY3WhRANCAARl84/BgWoWGP1bmOWD0X4R/6T1DoohaVNLMet6BAKtH+1TJX411YzE
YqgRilNMtsXFAopCj+JnGy122QW5SjBF";
const EC_X: &str = "ZfOPwYFqFhj9W5jlg9F-Ef-k9Q6KIWlTSzHregQCrR8";
const EC_Y: &str = "7VMlfjXVjMRiqBGKU0y2xcUCikKP4mcbLXbZBblKMEU";
const ISS: &str = "https://login.example.com/";
const AUD: &str = "https://chat.example.com";

/// A server that takes JWTs signed by the test key, plus `env`.
fn jwt_server(env: &[(&str, &str)]) -> Server {
    let jwks_dir = temp_data_dir();
    let jwks = jwks_dir.join("jwks.json");
    let doc = json!({"keys": [{"kty": "EC", "kid": "ec-1", "use": "sig", "crv": "P-256",
        "x": EC_X, "y": EC_Y}]});
    std::fs::write(&jwks, doc.to_string()).expect("write JWKS");
    let jwks_path = jwks.to_string_lossy().into_owned();
    let mut all = vec![
        ("NETAPI_CHAT_JWKS_FILE", jwks_path.as_str()),
        ("NETAPI_CHAT_JWT_ISSUER", ISS),
        ("NETAPI_CHAT_JWT_AUDIENCE", AUD),
    ];
    all.extend_from_slice(env);
    let srv = Server::logged(&all);
    // The JWKS was read at start.
    drop(jwks_dir);
    srv
}

/// An ES256 token with valid issuer, audience, scope and an hour to live for `sub` ALICE,
/// then each `(claim, value)` of `changes` set.
fn token(changes: &[(&str, Value)]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut claims = json!({"iss": ISS, "aud": AUD, "sub": ALICE, "scope": "chat",
        "iat": now, "exp": now + 3600});
    for (k, v) in changes {
        claims[*k] = v.clone();
    }
    let compact: String = EC_PKCS8.split_whitespace().collect();
    let der = STANDARD.decode(compact).expect("test key base64");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".to_owned());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&der)).expect("signs")
}

/// `GET …/{user}/subscriptions` with `token`: the status and the error text, if any.
async fn list_subscriptions(srv: &Server, user: &str, token: &str) -> support::Answer {
    let auth = format!("Bearer {token}");
    send_authorized("GET", &srv.urls().subscriptions(user), &auth, Format::Json).await
}

#[tokio::test]
async fn jwt_iss_given_as_an_array_is_refused() {
    let srv = jwt_server(&[]);
    let ok = list_subscriptions(&srv, ALICE, &token(&[])).await;
    assert_eq!(ok.status, 200, "the well-formed token works: {}", ok.body);
    for iss in [json!([ISS]), json!([ISS, "https://other.example.com/"])] {
        let a = list_subscriptions(&srv, ALICE, &token(&[("iss", iss.clone())])).await;
        assert_eq!(a.status, 401, "{iss}: {}", a.body);
        assert!(a.body.contains("iss claim is not a string"), "{}", a.body);
        assert!(
            a.header("www-authenticate")
                .contains("error=\"invalid_token\""),
            "{:?}",
            a.headers
        );
    }
}

#[tokio::test]
async fn jwt_users_array_only_in_a_custom_claim_as_documented() {
    // Default user claim `sub`: one address; an array is refused, with a pointer to the custom
    // claim (it used to fail as "not a well-formed JWT").
    let srv = jwt_server(&[]);
    let a = list_subscriptions(&srv, ALICE, &token(&[("sub", json!([ALICE, BOB]))])).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(
        a.body.contains("sub claim is an array")
            && a.body.contains("NETAPI_CHAT_JWT_USER_CLAIM")
            && !a.body.contains("well-formed"),
        "{}",
        a.body
    );
    drop(srv);

    // A custom user claim may hold an array: the token acts for each user in it, not others.
    let srv = jwt_server(&[("NETAPI_CHAT_JWT_USER_CLAIM", "chat_users")]);
    let t = token(&[
        ("sub", json!("user-7f3a")),
        ("chat_users", json!([ALICE, BOB])),
    ]);
    for user in [ALICE, BOB] {
        let a = list_subscriptions(&srv, user, &t).await;
        assert_eq!(a.status, 200, "{user}: {}", a.body);
    }
    let a = list_subscriptions(&srv, "sip:carol@example.com", &t).await;
    assert_eq!(a.status, 403, "{}", a.body);
}

/// Under JWT the per-token rate counts per subject, not per token string (ops review O6):
/// a client holding four tokens of one `sub` (differing in `jti`) shares one bucket, so
/// fetching more tokens does not multiply its rate; another subject has its own.
#[tokio::test]
async fn jwt_rate_limits_count_per_subject_not_per_token() {
    let srv = jwt_server(&[
        ("NETAPI_CHAT_RATE_LIMIT", "0.001"),
        ("NETAPI_CHAT_RATE_BURST", "3"),
    ]);
    let tokens: Vec<String> = (0..4)
        .map(|i| token(&[("jti", json!(format!("token-{i}")))]))
        .collect();
    let mut statuses = Vec::new();
    for t in &tokens {
        statuses.push(list_subscriptions(&srv, ALICE, t).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429], "one bucket for one subject");
    let bob = token(&[("sub", json!(BOB))]);
    assert_eq!(list_subscriptions(&srv, BOB, &bob).await.status, 200);
}
