//! Accounts driven without a socket: registration, login, logout and password change; the session cookie; the
//! login-throttling rule (a guesser elsewhere cannot lock out the user at the address of the last successful
//! login; one address is held to its rate); the operator token; and a scan of the database for passwords and
//! tokens in clear.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::body::{Body, to_bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use custos_hub::{AccountConfig, Hub, HubKeys, LoginRate, PasswordCost, app};
use custos_store::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The tests' clock: tests move it forward to pass throttling delays without sleeping.
static CLOCK: AtomicI64 = AtomicI64::new(1_773_584_400);

fn now() -> i64 {
    CLOCK.load(Ordering::SeqCst)
}

/// Argon2id at its smallest: the tests check the rules, not the cost.
const CHEAP: PasswordCost = PasswordCost {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

struct Fixture {
    dir: tempfile::TempDir,
    hub: Arc<Hub<SqliteStore>>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hub.db")).await.unwrap();
    let config = AccountConfig {
        password_cost: CHEAP,
        login_rate: LoginRate::default(),
        ..AccountConfig::default()
    };
    let hub = Hub::configured(store, HubKeys::generate(), now, config);
    Fixture { dir, hub }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// A request from `from` (an IPv4 address) with optional bearer token and JSON body.
async fn call(
    f: &Fixture,
    from: [u8; 4],
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let mut req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((from, 40_000))));
    let resp = app(f.hub.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

const HOME: [u8; 4] = [192, 0, 2, 1];
const ELSEWHERE: [u8; 4] = [198, 51, 100, 7];
const PASSWORD: &str = "correct horse battery";

async fn register(f: &Fixture, name: &str, password: &str) -> Reply {
    call(
        f,
        HOME,
        "POST",
        "/v1/accounts",
        None,
        Some(json!({"name": name, "password": password})),
    )
    .await
}

async fn login(f: &Fixture, from: [u8; 4], name: &str, password: &str) -> Reply {
    call(
        f,
        from,
        "POST",
        "/v1/sessions",
        None,
        Some(json!({"name": name, "password": password})),
    )
    .await
}

fn bearer(r: &Reply) -> String {
    format!("Bearer {}", r.body["token"].as_str().unwrap())
}

#[tokio::test]
async fn register_login_whoami_logout() {
    let f = fixture().await;
    let r = register(&f, "Alice", PASSWORD).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["name"], "alice", "names are lowered");
    let r = register(&f, "ALICE", "another long password").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["error"], "conflict");
    assert_eq!(
        register(&f, "bob", "short").await.status,
        StatusCode::BAD_REQUEST
    );
    let long = "x".repeat(1025);
    assert_eq!(
        register(&f, "bob", &long).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        register(&f, "b o b", PASSWORD).await.status,
        StatusCode::BAD_REQUEST
    );

    let r = login(&f, HOME, "alice", PASSWORD).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let token = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64, "32 bytes in hex");
    assert!(r.body["expires"].as_i64().unwrap() >= now() + 29 * 86_400);
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with(&format!("custos_session={token};")),
        "{cookie}"
    );
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie.split("; ").any(|a| a == attribute),
            "{attribute} missing: {cookie}"
        );
    }

    let auth = format!("Bearer {token}");
    let me = call(&f, HOME, "GET", "/v1/accounts/me", Some(&auth), None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["name"], "alice");
    assert_eq!(me.body["owned"], json!([]));
    assert_eq!(me.body["shared"], json!([]));
    // The cookie form works too.
    let mut req = Request::get("/v1/accounts/me")
        .header("cookie", format!("theme=dark; custos_session={token}"))
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((HOME, 1))));
    assert_eq!(
        app(f.hub.clone()).oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );

    let r = call(
        &f,
        HOME,
        "DELETE",
        "/v1/sessions/current",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let me = call(&f, HOME, "GET", "/v1/accounts/me", Some(&auth), None).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me.body["error"], "unauthorized");
    for bad in ["Bearer nothex", "Basic abc", "Bearer "] {
        let r = call(&f, HOME, "GET", "/v1/accounts/me", Some(bad), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    let r = call(&f, HOME, "GET", "/v1/accounts/me", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_passwords_and_unknown_accounts_look_alike() {
    let f = fixture().await;
    register(&f, "carol", PASSWORD).await;
    let wrong = login(&f, HOME, "carol", "not the password").await;
    let unknown = login(&f, HOME, "nobody", PASSWORD).await;
    let invalid = login(&f, HOME, "n o", PASSWORD).await;
    for r in [&wrong, &unknown, &invalid] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body, wrong.body);
    }
    assert_eq!(
        login(&f, HOME, "CAROL", PASSWORD).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_new_password_ends_the_other_sessions() {
    let f = fixture().await;
    register(&f, "dave", PASSWORD).await;
    let one = bearer(&login(&f, HOME, "dave", PASSWORD).await);
    let two = bearer(&login(&f, HOME, "dave", PASSWORD).await);
    let change = |old: &str, new: &str| json!({"old": old, "new": new});
    let path = "/v1/accounts/me/password";
    let r = call(
        &f,
        HOME,
        "PUT",
        path,
        Some(&one),
        Some(change("wrong password", "new password 1")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(
        &f,
        HOME,
        "PUT",
        path,
        Some(&one),
        Some(change(PASSWORD, "short")),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &f,
        HOME,
        "PUT",
        path,
        Some(&one),
        Some(change(PASSWORD, "new password 1")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["sessions_ended"], 1);
    let f = &f;
    let me = |auth: String| async move {
        call(f, HOME, "GET", "/v1/accounts/me", Some(&auth), None)
            .await
            .status
    };
    assert_eq!(me(two.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(one.clone()).await, StatusCode::OK);
    assert_eq!(
        login(f, HOME, "dave", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(f, HOME, "dave", "new password 1").await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_guesser_elsewhere_cannot_lock_out_the_user_at_home() {
    let f = fixture().await;
    register(&f, "erin", PASSWORD).await;
    // Erin's last successful login was from HOME.
    assert_eq!(
        login(&f, HOME, "erin", PASSWORD).await.status,
        StatusCode::CREATED
    );
    // Five free failures from elsewhere, then each further attempt waits 1 s, 2 s, 4 s, … after the last failure,
    // from any address but home.
    for _ in 0..5 {
        assert_eq!(
            login(&f, ELSEWHERE, "erin", "guess guess guess")
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = login(&f, ELSEWHERE, "erin", PASSWORD).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    assert_eq!(r.body["error"], "rate_limited");
    assert_eq!(r.headers["retry-after"], "1");
    let r = login(&f, [203, 0, 113, 9], "erin", "guess guess guess").await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the delay is per account"
    );
    // Erin, at home, is not held up.
    assert_eq!(
        login(&f, HOME, "erin", PASSWORD).await.status,
        StatusCode::CREATED
    );

    // Erin's success reset the counters; a guesser (at a fresh address, within its own rate) starts again: five
    // free, then the delays double.
    let guesser = [198, 51, 100, 8];
    for _ in 0..5 {
        login(&f, guesser, "erin", "guess guess guess").await;
    }
    CLOCK.fetch_add(1, Ordering::SeqCst);
    assert_eq!(
        login(&f, guesser, "erin", "guess 6 guess 6").await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = login(&f, guesser, "erin", "guess 7 guess 7").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["retry-after"], "2");

    // Failures at home have their own counter: home is throttled only by its own failures.
    for _ in 0..5 {
        assert_eq!(
            login(&f, HOME, "erin", "typo typo typo").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(&f, HOME, "erin", PASSWORD).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    CLOCK.fetch_add(1, Ordering::SeqCst);
    assert_eq!(
        login(&f, HOME, "erin", PASSWORD).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn one_address_is_held_to_its_login_rate() {
    let f = fixture().await;
    let from = [203, 0, 113, 50];
    // Unknown names: the per-account delay never applies, only the per-address rate (10 a minute, bursts of 10).
    for i in 0..10 {
        let r = login(&f, from, &format!("nobody{i}"), PASSWORD).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let r = login(&f, from, "nobody10", PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.body["error"], "rate_limited");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=6).contains(&wait), "{wait}");
    // Another address is not affected.
    assert_eq!(
        login(&f, HOME, "nobody", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_store_holds_no_password_and_no_token_in_clear() {
    let f = fixture().await;
    let password = "unmistakable-password-4711";
    register(&f, "frank", password).await;
    let r = login(&f, HOME, "frank", password).await;
    let token = r.body["token"].as_str().unwrap().to_string();
    let call_me = call(
        &f,
        HOME,
        "PUT",
        "/v1/accounts/me/password",
        Some(&format!("Bearer {token}")),
        Some(json!({"old": password, "new": "second-unmistakable-0815"})),
    )
    .await;
    assert_eq!(call_me.status, StatusCode::OK);
    f.hub.store().close().await;
    let raw_token = hex::decode(&token).unwrap();
    let mut scanned = 0;
    for bytes in common::files_in(f.dir.path()) {
        scanned += bytes.len();
        for needle in [
            password.as_bytes(),
            b"second-unmistakable-0815",
            token.as_bytes(),
            &raw_token,
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "found {} in the database",
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(scanned > 0);
}

#[tokio::test]
async fn admin_listings_need_the_operator_token() {
    let f = fixture().await;
    for path in ["/v1/devices", "/v1/presence"] {
        let r = call(&f, HOME, "GET", path, None, None).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{path} without a token set"
        );
    }
    f.hub.set_operator_token("op-secret");
    register(&f, "gina", PASSWORD).await;
    let session = bearer(&login(&f, HOME, "gina", PASSWORD).await);
    for path in ["/v1/devices", "/v1/presence"] {
        // A session may read presence, of its own devices only (tests/authz.rs); the device listing is the
        // operator's.
        let r = call(&f, HOME, "GET", path, Some(&session), None).await;
        let expected = if path == "/v1/presence" {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(r.status, expected, "{path} with a user's session");
        let r = call(&f, HOME, "GET", path, Some("Bearer wrong"), None).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong token"
        );
        let r = call(&f, HOME, "GET", path, Some("Bearer op-secret"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
}
