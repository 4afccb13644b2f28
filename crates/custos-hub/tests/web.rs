//! The web dashboard's side of the hub, attacked over a loopback socket: the embedded assets and their headers
//! (content types, ETags and 304s, the CSP and framing rules, subresource integrity that matches what is served),
//! the live event stream (what each account sees, presence and state as they change, the per-account bound, the
//! end of a stream with its session), and the CSRF rule on cookie-authenticated writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Loopback, admit, device_auth_at, wall_clock};
use custos_hub::{AccountConfig, LoginRate};
use custos_proto::DeviceId;
use custos_store::Store;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha384};
use tokio::time::timeout;

/// The longest any one wait may take.
const BOUND: Duration = Duration::from_secs(20);
const DEV: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 1]);
const DEV2: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 2]);
const SK: [u8; 32] = [7; 32];
const SK2: [u8; 32] = [8; 32];
const PASSWORD: &str = "correct horse battery";
const EVIL: &str = "https://evil.example";

/// The assets and their exact content types.
const ASSETS: [(&str, &str); 7] = [
    ("/", "text/html; charset=utf-8"),
    ("/index.html", "text/html; charset=utf-8"),
    ("/app.js", "text/javascript; charset=utf-8"),
    ("/style.css", "text/css; charset=utf-8"),
    ("/custos_web.js", "text/javascript; charset=utf-8"),
    ("/custos_web_bg.wasm", "application/wasm"),
    ("/icon.svg", "image/svg+xml"),
];

fn client() -> reqwest::Client {
    custos_client::tls::http_client(
        reqwest::Client::builder().no_proxy(),
        &custos_client::TlsTrust::System,
    )
    .unwrap()
}

/// One request with `headers`; the status, headers and body.
async fn send(
    lb: &Loopback,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    send_json(lb, method, path, headers, None).await
}

/// One request with `headers` and a JSON `body`; the status, headers and body. Every answer is checked for
/// CORS headers: the hub sends none.
async fn send_json(
    lb: &Loopback,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = client().request(method, lb.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = timeout(BOUND, req.send()).await.unwrap().unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = timeout(BOUND, resp.bytes()).await.unwrap().unwrap();
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "no CORS: {path}"
    );
    (status, headers, body.to_vec())
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["error"].as_str().unwrap().to_string()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Registers `name` and logs in: the session token.
async fn session(lb: &Loopback, name: &str) -> String {
    let creds = json!({"name": name, "password": PASSWORD});
    let (s, _, _) = send_json(lb, Method::POST, "/v1/accounts", &[], Some(creds)).await;
    assert!(s == StatusCode::CREATED || s == StatusCode::CONFLICT, "{s}");
    login(lb, name).await
}

/// Logs `name` in once more: a further session token.
async fn login(lb: &Loopback, name: &str) -> String {
    let creds = json!({"name": name, "password": PASSWORD});
    let (s, _, b) = send_json(lb, Method::POST, "/v1/sessions", &[], Some(creds)).await;
    assert_eq!(s, StatusCode::CREATED);
    let v: Value = serde_json::from_slice(&b).unwrap();
    v["token"].as_str().unwrap().to_string()
}

async fn account_id(lb: &Loopback, name: &str) -> i64 {
    lb.hub
        .store()
        .account_by_name(name)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// Standard base64 with padding, for subresource integrity values.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn every_asset_is_served_with_its_headers_and_revalidates() {
    let lb = Loopback::start(AccountConfig::default()).await;
    let mut bodies = std::collections::HashMap::new();
    for (path, content_type) in ASSETS {
        let (s, h, body) = send(&lb, Method::GET, path, &[]).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(header(&h, "content-type"), content_type, "{path}");
        assert!(!body.is_empty(), "{path}");
        let etag = header(&h, "etag").to_string();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() == 66,
            "a strong SHA-256 ETag: {etag}"
        );
        assert_eq!(etag[1..65], hex::encode(sha2::Sha256::digest(&body)));
        for (name, want) in [
            ("cache-control", "no-cache"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-resource-policy", "same-origin"),
            (
                "permissions-policy",
                "camera=(), microphone=(), geolocation=()",
            ),
        ] {
            assert_eq!(header(&h, name), want, "{path} {name}");
        }
        let page = content_type.starts_with("text/html");
        assert_eq!(
            h.get("content-security-policy")
                .map(|v| v.to_str().unwrap()),
            page.then_some(custos_hub::web::CSP),
            "{path}"
        );
        assert_eq!(
            h.get("x-frame-options").map(|v| v.to_str().unwrap()),
            page.then_some("DENY"),
            "{path}"
        );

        // Revalidation: the same ETag (alone, in a list, or `*`) is 304 with no body; another is the file.
        for inm in [etag.clone(), format!("\"00\", {etag}"), "*".to_string()] {
            let (s, h304, b) = send(&lb, Method::GET, path, &[("if-none-match", &inm)]).await;
            assert_eq!(s, StatusCode::NOT_MODIFIED, "{path} {inm}");
            assert!(b.is_empty(), "{path}");
            assert_eq!(header(&h304, "etag"), etag);
            assert_eq!(header(&h304, "cache-control"), "no-cache");
            assert_eq!(header(&h304, "x-content-type-options"), "nosniff");
            assert_eq!(
                h304.get("content-security-policy")
                    .map(|v| v.to_str().unwrap()),
                page.then_some(custos_hub::web::CSP),
            );
        }
        let (s, _, b) = send(&lb, Method::GET, path, &[("if-none-match", "\"00\"")]).await;
        assert_eq!((s, b.len()), (StatusCode::OK, body.len()), "{path}");

        let (s, hh, b) = send(&lb, Method::HEAD, path, &[]).await;
        assert_eq!(s, StatusCode::OK, "HEAD {path}");
        assert!(b.is_empty());
        assert_eq!(header(&hh, "content-type"), content_type);
        assert_eq!(header(&hh, "etag"), etag);

        let (s, _, b) = send(&lb, Method::POST, path, &[]).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "POST {path}");
        assert_eq!(error_code(&b), "method_not_allowed");
        bodies.insert(path.trim_start_matches('/'), body);
    }

    // Nothing else is served from the root: unknown names, other spellings, paths out of the directory.
    for path in [
        "/nope.js",
        "/APP.JS",
        "/app.js/",
        "/web/app.js",
        "/%2e%2e%2fCargo.toml",
        "/..%2fsrc%2fweb.rs",
        "/index.html%00",
    ] {
        let (s, h, b) = send(&lb, Method::GET, path, &[]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(header(&h, "content-type"), "application/json");
        assert_eq!(error_code(&b), "not_found");
    }

    // The page names each of its files with the SHA-384 of exactly what the hub serves.
    let page = String::from_utf8(bodies[""].clone()).unwrap();
    assert_eq!(bodies[""], bodies["index.html"]);
    for line in page.lines().filter(|l| l.contains("<script")) {
        assert!(line.contains("integrity=\"sha384-"), "{line}");
    }
    for name in [
        "app.js",
        "custos_web.js",
        "style.css",
        "icon.svg",
        "custos_web_bg.wasm",
    ] {
        let want = format!("sha384-{}", base64(&Sha384::digest(&bodies[name])));
        let line = page
            .lines()
            .find(|l| l.contains(&format!("\"{name}\"")) && l.contains("integrity"))
            .unwrap_or_else(|| panic!("index.html does not name {name} with its integrity"));
        let got = line
            .split("integrity=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap();
        assert_eq!(
            got, want,
            "{name}: what index.html pins is not what the hub serves"
        );
    }
}

/// An open event stream, read incrementally.
struct Events {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

/// One event: its fields in order (`""` for comment lines).
type Block = Vec<(String, String)>;

impl Events {
    async fn open(lb: &Loopback, token: &str) -> Self {
        let resp = timeout(
            BOUND,
            client().get(lb.url("/v1/events")).bearer_auth(token).send(),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(resp.headers(), "content-type"), "text/event-stream");
        assert_eq!(
            resp.headers()
                .get_all("cache-control")
                .iter()
                .collect::<Vec<_>>(),
            ["no-store"]
        );
        assert_eq!(header(resp.headers(), "x-accel-buffering"), "no");
        Self {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` once the hub ended the stream; at most `within`.
    async fn block_within(&mut self, within: Duration) -> Option<Block> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let text = String::from_utf8(self.buf.drain(..i + 2).collect()).unwrap();
                return Some(
                    text[..i]
                        .lines()
                        .map(|l| match l.split_once(':') {
                            Some((k, v)) => {
                                (k.to_string(), v.strip_prefix(' ').unwrap_or(v).into())
                            }
                            None => (l.to_string(), String::new()),
                        })
                        .collect(),
                );
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("no event in time")
            {
                Ok(Some(bytes)) => self.buf.extend_from_slice(&bytes),
                Ok(None) => return None,
                Err(e) => panic!("the stream broke: {e}"),
            }
        }
    }

    /// The next `devices` event's data (comments and `retry` skipped).
    async fn devices(&mut self) -> Value {
        loop {
            let block = self.block_within(BOUND).await.expect("the stream ended");
            // Comments (the greeting, pings) and the reconnection delay carry no data.
            if !block.iter().any(|(k, _)| k == "event" || k == "data") {
                continue;
            }
            assert_eq!(block[0], ("event".into(), "devices".into()), "{block:?}");
            assert_eq!(block.len(), 2, "one data line: {block:?}");
            assert_eq!(block[1].0, "data");
            let v: Value = serde_json::from_str(&block[1].1).unwrap();
            // The hub's clock in Unix seconds. An event may wait in the socket while the test reads earlier ones
            // on a loaded machine, so allow some lag; wrong units or a missing clock are far outside this.
            let lag = (v["now"].as_i64().unwrap() - wall_clock()).abs();
            assert!(lag <= 30, "now is {lag} s off the wall clock: {v}");
            return v;
        }
    }

    /// `devices` events until one satisfies `want`; each is checked by `every` on the way.
    async fn devices_until(
        &mut self,
        every: impl Fn(&Value),
        want: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < BOUND, "no such event in time");
            let v = self.devices().await;
            every(&v);
            if want(&v) {
                return v;
            }
        }
    }

    /// Whether the hub ends the stream within `within` (comments and pings allowed on the way).
    async fn ends_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match timeout(left, self.block_within(left + Duration::from_secs(1))).await {
                Err(_) => return false,
                Ok(None) => return true,
                Ok(Some(_)) => {}
            }
        }
    }
}

/// The devices an event lists, as ids.
fn listed(v: &Value) -> Vec<String> {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap().to_string())
        .collect()
}

/// A device's heartbeat on its control long-poll, reporting `state`, waiting up to `wait` seconds.
async fn heartbeat(lb: &Loopback, device: DeviceId, sk: [u8; 32], state: &str, wait: u64) {
    let path = format!(
        "/v1/devices/{device}/control?after=0&wait={wait}&state={}",
        hex::encode(state)
    );
    let auth = device_auth_at(sk, device, wall_clock());
    let (s, _, b) = send(lb, Method::GET, &path, &[("authorization", &auth)]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
}

/// Devices offline after 2 s (streams check every second), and no per-address login limit: every login here
/// comes from 127.0.0.1.
fn quick() -> AccountConfig {
    AccountConfig {
        offline_after: Duration::from_secs(2),
        login_rate: LoginRate {
            per_minute: 0,
            ..LoginRate::default()
        },
        ..AccountConfig::default()
    }
}

#[tokio::test]
async fn the_event_stream_follows_each_accounts_own_devices() {
    let lb = Loopback::start(quick()).await;
    let now = wall_clock();
    admit(lb.hub.store(), DEV, SK, now).await;
    admit(lb.hub.store(), DEV2, SK2, now).await;
    let alice = session(&lb, "alice").await;
    let bob = session(&lb, "bob").await;
    let mallory = session(&lb, "mallory").await;
    let store = lb.hub.store();
    assert!(
        store
            .set_owner(DEV, None, account_id(&lb, "alice").await, now)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_owner(DEV2, None, account_id(&lb, "mallory").await, now)
            .await
            .unwrap()
    );
    let (s, _, _) = send_json(
        &lb,
        Method::POST,
        &format!("/v1/devices/{DEV}/shares"),
        &[("authorization", &format!("Bearer {alice}"))],
        Some(json!({"account": "bob", "rights": "view"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // Without a session: 401, as JSON.
    for auth in [
        None,
        Some("Bearer 00"),
        Some(&*format!("Bearer {}", "ab".repeat(32))),
    ] {
        let mut h = vec![];
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        let (s, _, b) = send(&lb, Method::GET, "/v1/events", &h).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(error_code(&b), "unauthorized");
    }

    let mut a = Events::open(&lb, &alice).await;
    let mut b = Events::open(&lb, &bob).await;
    let mut m = Events::open(&lb, &mallory).await;
    // First the reconnection delay and a comment, then the list.
    let first = a.block_within(BOUND).await.unwrap();
    assert!(
        first.contains(&("retry".into(), "2000".into())),
        "{first:?}"
    );
    assert!(first.iter().any(|(k, _)| k.is_empty()), "{first:?}");
    assert!(!first.iter().any(|(k, _)| k == "event" || k == "data"));
    let v = a.devices().await;
    assert_eq!(v["offline_after"], json!(2));
    assert_eq!(
        v["devices"],
        json!([{"device": DEV.to_string(), "role": "owner", "online": false, "last_seen": null,
            "state": null, "state_at": null, "revoked": false}])
    );
    let v = b.devices().await;
    assert_eq!(listed(&v), [DEV.to_string()]);
    assert_eq!(v["devices"][0]["role"], json!("view"));
    let v = m.devices().await;
    assert_eq!(listed(&v), [DEV2.to_string()]);

    // The device waits on its long-poll (staying online while it waits) and reports a state: a new event.
    let not_mallorys = |v: &Value| assert_eq!(listed(v), [DEV.to_string()], "{v}");
    let waiting = {
        let url = lb.url(&format!(
            "/v1/devices/{DEV}/control?after=0&wait=4&state={}",
            hex::encode("on")
        ));
        let auth = device_auth_at(SK, DEV, wall_clock());
        tokio::spawn(async move {
            client()
                .get(url)
                .header("authorization", auth)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let v = a
        .devices_until(not_mallorys, |v| v["devices"][0]["state"] == json!("on"))
        .await;
    let d = &v["devices"][0];
    assert_eq!(d["online"], json!(true), "{v}");
    assert!(d["last_seen"].as_i64().unwrap() >= now);
    assert!(d["state_at"].as_i64().unwrap() >= now);
    let v = b
        .devices_until(not_mallorys, |v| v["devices"][0]["state"] == json!("on"))
        .await;
    assert_eq!(v["devices"][0]["role"], json!("view"));
    assert_eq!(
        timeout(BOUND, waiting).await.unwrap().unwrap(),
        StatusCode::OK
    );

    // Silent for offline_after: offline, its last state kept.
    let v = a
        .devices_until(not_mallorys, |v| v["devices"][0]["online"] == json!(false))
        .await;
    assert_eq!(v["devices"][0]["state"], json!("on"));

    // A new state: a new event.
    heartbeat(&lb, DEV, SK, "off", 0).await;
    let v = a
        .devices_until(not_mallorys, |v| v["devices"][0]["state"] == json!("off"))
        .await;
    assert_eq!(v["devices"][0]["revoked"], json!(false));

    // Mallory's stream moves with her device only, and never names Alice's.
    heartbeat(&lb, DEV2, SK2, "m", 0).await;
    let v = m
        .devices_until(
            |v| assert_eq!(listed(v), [DEV2.to_string()], "{v}"),
            |v| v["devices"][0]["state"] == json!("m"),
        )
        .await;
    assert_eq!(v["devices"][0]["role"], json!("owner"));
    // Alice saw nothing of Mallory's device meanwhile: her next event (if any) still lists DEV only.
    if let Ok(Some(block)) = timeout(Duration::from_millis(1500), a.block_within(BOUND)).await {
        assert!(
            !block.iter().any(|(_, v)| v.contains(&DEV2.to_string())),
            "{block:?}"
        );
    }
}

#[tokio::test]
async fn an_account_holds_at_most_eight_streams() {
    let lb = Loopback::start(quick()).await;
    let alice = session(&lb, "alice").await;
    let bob = session(&lb, "bob").await;
    let mut open = Vec::new();
    for _ in 0..custos_hub::web::STREAMS_PER_ACCOUNT {
        // A further session of the same account counts against the same bound.
        open.push(Events::open(&lb, &login(&lb, "alice").await).await);
    }
    assert_eq!(open.len(), 8);
    for token in [&alice, &login(&lb, "alice").await] {
        let (s, h, b) = send(
            &lb,
            Method::GET,
            "/v1/events",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&h, "content-type"), "application/json");
        assert_eq!(error_code(&b), "quota");
    }
    // Another account is not held to Alice's bound.
    let mut other = Events::open(&lb, &bob).await;
    other.block_within(BOUND).await.unwrap();

    // One closes; the hub notices and takes a new one.
    drop(open.pop());
    let started = Instant::now();
    loop {
        let resp = client()
            .get(lb.url("/v1/events"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::OK {
            break;
        }
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            started.elapsed() < BOUND,
            "a closed stream's place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stream_ends_with_its_session() {
    let lb = Loopback::start(quick()).await;
    let first = session(&lb, "alice").await;
    let second = login(&lb, "alice").await;
    let mut ending = Events::open(&lb, &first).await;
    let mut staying = Events::open(&lb, &second).await;
    ending.devices().await;
    staying.devices().await;
    let (s, _, _) = send(
        &lb,
        Method::DELETE,
        "/v1/sessions/current",
        &[("authorization", &format!("Bearer {first}"))],
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(
        ending.ends_within(BOUND).await,
        "the stream outlived its session"
    );
    // The other session's stream goes on (the hub checks sessions at least every second here).
    assert!(!staying.ends_within(Duration::from_secs(3)).await);
    let (s, _, _) = send(
        &lb,
        Method::GET,
        "/v1/events",
        &[("authorization", &format!("Bearer {first}"))],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// Headers of a browser request with the session cookie, plus `extra`.
fn with_cookie<'a>(cookie: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("cookie", cookie)];
    h.extend_from_slice(extra);
    h
}

#[tokio::test]
async fn cookie_writes_must_come_from_the_hubs_own_page() {
    let lb = Loopback::start(AccountConfig::default()).await;
    admit(lb.hub.store(), DEV, SK, wall_clock()).await;
    let token = session(&lb, "alice").await;
    let cookie = format!("custos_session={token}");
    let bearer = format!("Bearer {token}");
    let own = format!("http://{}", lb.addr);
    let own_tls = format!("https://{}", lb.addr);
    let claim = format!("/v1/devices/{DEV}/claim");

    // The login sets the cookie a browser keeps to this site.
    let creds = json!({"name": "alice", "password": PASSWORD});
    let (_, h, _) = send_json(&lb, Method::POST, "/v1/sessions", &[], Some(creds)).await;
    let set = header(&h, "set-cookie").to_string();
    // A page elsewhere cannot log the browser in to another account either: a form or a `no-cors` fetch can only
    // send a body as text/plain or form data, and the hub takes the credentials only as JSON.
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let resp = client()
            .post(lb.url("/v1/sessions"))
            .header("content-type", content_type)
            .header("origin", EVIL)
            .body(json!({"name": "alice", "password": PASSWORD}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{content_type}");
        assert!(resp.headers().get("set-cookie").is_none());
    }
    for attr in [
        "custos_session=",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(set.contains(attr), "{set}");
    }

    // Another site's writes with the cookie: refused, and nothing happens.
    let other_port = format!("http://127.0.0.1:{}", lb.addr.port().wrapping_add(1));
    let suffixed = format!("{own}.evil.example");
    let refused: Vec<Vec<(&str, &str)>> = vec![
        with_cookie(&cookie, &[("origin", EVIL)]),
        with_cookie(&cookie, &[("origin", "null")]),
        with_cookie(&cookie, &[("origin", &other_port)]),
        with_cookie(&cookie, &[("origin", &suffixed)]),
        with_cookie(
            &cookie,
            &[("origin", EVIL), ("sec-fetch-site", "same-origin")],
        ),
        with_cookie(&cookie, &[]),
        with_cookie(&cookie, &[("sec-fetch-site", "cross-site")]),
        with_cookie(&cookie, &[("sec-fetch-site", "same-site")]),
        with_cookie(&cookie, &[("sec-fetch-site", "none")]),
        // Another kind of credential does not make the cookie request a bearer one.
        with_cookie(&cookie, &[("origin", EVIL), ("authorization", "Custos 00")]),
    ];
    for h in &refused {
        for (method, path) in [
            (Method::POST, claim.as_str()),
            (Method::DELETE, "/v1/sessions/current"),
            (Method::PUT, "/v1/accounts/me/password"),
            (Method::POST, &*format!("/v1/devices/{DEV}/shares")),
        ] {
            let (s, _, b) = send(&lb, method.clone(), path, h).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path} {h:?}");
            assert_eq!(error_code(&b), "forbidden");
            let msg: Value = serde_json::from_slice(&b).unwrap();
            assert!(
                msg["message"].as_str().unwrap().contains("cross-site"),
                "{msg}"
            );
        }
    }
    assert_eq!(
        lb.hub
            .store()
            .open_claims(account_id(&lb, "alice").await, None, wall_clock())
            .await
            .unwrap(),
        0
    );
    // The session survived every attempt to end it.
    let (s, _, _) = send(
        &lb,
        Method::GET,
        "/v1/accounts/me",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // Reads with the cookie are not refused (another site cannot read the answer: no CORS headers, checked on
    // every response by `send`); neither is a preflight answered.
    for h in [
        with_cookie(&cookie, &[("origin", EVIL)]),
        with_cookie(&cookie, &[("sec-fetch-site", "cross-site")]),
        with_cookie(&cookie, &[]),
    ] {
        let (s, _, _) = send(&lb, Method::GET, "/v1/accounts/me", &h).await;
        assert_eq!(s, StatusCode::OK, "{h:?}");
        // The dashboard's own stream goes with the cookie too.
        let mut req = client().get(lb.url("/v1/events"));
        for (k, v) in &h {
            req = req.header(*k, *v);
        }
        let resp = timeout(BOUND, req.send()).await.unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{h:?}");
        assert!(resp.headers().get("access-control-allow-origin").is_none());
    }
    let (s, _, _) = send(
        &lb,
        Method::OPTIONS,
        &claim,
        &[
            ("origin", EVIL),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "authorization"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);

    // The hub's own page: its Origin (over http or https), or no Origin and `Sec-Fetch-Site: same-origin`.
    for h in [
        with_cookie(&cookie, &[("origin", &own)]),
        with_cookie(&cookie, &[("origin", &own_tls)]),
        with_cookie(&cookie, &[("sec-fetch-site", "same-origin")]),
    ] {
        let (s, _, b) = send(&lb, Method::POST, &claim, &h).await;
        assert_eq!(
            s,
            StatusCode::CREATED,
            "{h:?} {}",
            String::from_utf8_lossy(&b)
        );
    }
    // A bearer token is no ambient credential: another site's Origin changes nothing.
    let (s, _, _) = send(
        &lb,
        Method::POST,
        &claim,
        &[
            ("authorization", &bearer),
            ("origin", EVIL),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        lb.hub
            .store()
            .open_claims(account_id(&lb, "alice").await, None, wall_clock())
            .await
            .unwrap(),
        4
    );

    // Logging out from the page works, and then the cookie is worth nothing.
    let (s, h, _) = send(
        &lb,
        Method::DELETE,
        "/v1/sessions/current",
        &with_cookie(&cookie, &[("origin", &own)]),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(header(&h, "set-cookie").contains("Max-Age=0"));
    let (s, _, _) = send(
        &lb,
        Method::GET,
        "/v1/accounts/me",
        &with_cookie(&cookie, &[]),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// The hub as `custos hub serve` runs it (limits, graceful shutdown), with a grace period far longer than the
/// test's bound: an open dashboard stream must end when the hub stops rather than hold the stop for the grace.
#[tokio::test]
async fn an_open_stream_does_not_hold_up_the_hubs_shutdown() {
    use custos_hub::serve::{HubTls, Limits, ServeConfig, spawn};
    let dir = tempfile::tempdir().unwrap();
    let running = spawn(ServeConfig {
        registry: None,
        data_dir: dir.path().join("hub"),
        listen: "127.0.0.1:0".parse().unwrap(),
        database: None,
        mqtt: None,
        accounts: AccountConfig {
            password_cost: common::CHEAP,
            ..quick()
        },
        limits: Limits {
            shutdown_grace: Duration::from_secs(60),
            ..Limits::default()
        },
        tls: HubTls::Plain,
    })
    .await
    .unwrap();
    let url = running.url();
    let c = client();
    let creds = json!({"name": "alice", "password": PASSWORD}).to_string();
    let mut token = Value::Null;
    for path in ["/v1/accounts", "/v1/sessions"] {
        let resp = c
            .post(format!("{url}{path}"))
            .header("content-type", "application/json")
            .body(creds.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        token = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    }
    let mut stream = Events {
        resp: c
            .get(format!("{url}/v1/events"))
            .bearer_auth(token["token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
        buf: Vec::new(),
    };
    assert_eq!(stream.resp.status(), StatusCode::OK);
    stream.devices().await;
    let started = Instant::now();
    timeout(BOUND, running.stop())
        .await
        .expect("the stream held up the shutdown")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(stream.ends_within(BOUND).await);
}
