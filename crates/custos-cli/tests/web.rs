//! The web dashboard in a real browser: Debian's Chromium, headless, driven over the DevTools protocol against a
//! real `custos hub serve` (HTTPS) and a real `custos device run`. Two people in two browser contexts register,
//! add a device by its owner code (pairing and claim run in the page's WebAssembly), watch it come online, switch
//! it and see the device's relay follow, share it, revoke the share, and chart its readings decrypted in the
//! page. Every request the pages send is captured in the browser and searched for the owner code, the
//! user–device key, a member key and any plaintext reading: none may carry one.
//!
//! Chromium must be installed (`/usr/bin/chromium`, or `CUSTOS_CHROMIUM`): without it the test fails, it does not
//! skip. `CUSTOS_WEB_SCREENSHOTS=DIR` keeps the screenshots (phone and desktop) in DIR; `docs/screenshots/` holds
//! the committed ones. `CUSTOS_WEB_TOGGLES=N` sets how many timed toggles to make (default 20; the figure in
//! docs/benchmarks.md is from 100).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "common/browser.rs"]
mod browser;

use base64::Engine;
use browser::*;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_pairs_switches_shares_and_charts_without_the_hub_seeing_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let shots = match std::env::var_os("CUSTOS_WEB_SCREENSHOTS") {
        Some(p) => std::path::absolute(p).unwrap(),
        None => d.join("shots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let Fixture {
        mut hub,
        url,
        device,
        owner_code,
        ..
    } = Fixture::start(d);
    let mut dev = agent(d, &url);

    let browser = launch(&d.join("chromium")).await;
    let alice = Ui::open(&browser, &url, "alice").await;
    let ready: f64 = alice.eval("window.custosMetrics.ready").await;
    println!("page load to interactive (first visit): {ready:.0} ms");
    alice.shots(&shots, "login").await;

    // A wrong password is told apart from success, in words.
    alice.fill("#form-login input[name=name]", "nobody").await;
    alice
        .fill("#form-login input[name=password]", "not the password")
        .await;
    alice.click("#login-submit").await;
    alice
        .wait(
            "document.getElementById('login-error').textContent === 'Wrong name or password.'",
            30,
            "the wrong-password error",
        )
        .await;

    alice.register("alice", "alice's long password").await;
    alice
        .wait(
            "document.getElementById('empty').hidden === false",
            10,
            "the empty list",
        )
        .await;

    // Add the device: the owner code is typed into the page, and pairing and claim run in it.
    alice
        .add_device(&device, &owner_code, "Desk lamp", Some(&shots))
        .await;
    let card = Ui::card(&device);
    assert_eq!(alice.text(&format!("{card} .name")).await, "Desk lamp");

    // Switch it: the device's relay follows, and the page says done only on the device's verified answer.
    alice.toggle(&device, "on").await;
    wait_relay(d, "on").await;
    alice.toggle(&device, "off").await;
    wait_relay(d, "off").await;
    alice.shots(&shots, "devices").await;

    // Timed toggles: click to verified answer on the page.
    let n: usize = std::env::var("CUSTOS_WEB_TOGGLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let _: bool = alice
        .eval("(window.custosMetrics.toggles = [], true)")
        .await;
    for i in 0..n {
        alice
            .toggle(&device, if i % 2 == 0 { "on" } else { "off" })
            .await;
    }
    let mut times: Vec<f64> = alice.eval("window.custosMetrics.toggles").await;
    assert_eq!(times.len(), n);
    times.sort_by(f64::total_cmp);
    println!(
        "toggle to verified answer over {n} toggles: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[n - 1]
    );

    // A command refused by the device is shown as refused.
    alice.click(&format!("{card} .name")).await;
    alice
        .wait(
            "document.body.dataset.view === 'device'",
            10,
            "the device page",
        )
        .await;
    alice.fill("#set-value", "purple").await;
    alice.click("#form-set button").await;
    alice
        .wait(
            "document.getElementById('dev-msg').textContent === 'The device does not take that value.'",
            30,
            "the device's refusal",
        )
        .await;

    // The chart: readings decrypted in the page (the device seals one a second).
    alice
        .wait(
            // Asks again (the 1 h preset) at most once a second until three readings are in.
            "Number(document.getElementById('chart').dataset.points || 0) >= 3 || ((window.lastAsk || 0) < Date.now() - 1000 && (window.lastAsk = Date.now(), document.querySelector('[data-preset=\"3600\"]').click()), false)",
            60,
            "readings in the chart",
        )
        .await;
    let msg = alice.text("#chart-msg").await;
    assert!(msg.contains("decrypted in this browser"), "{msg}");
    assert!(!msg.contains("did not open"), "{msg}");
    alice.shots(&shots, "device").await;

    // Share with bob, in a second browser context; bob accepts the code the owner hands him.
    let bob = Ui::open(&browser, &url, "bob").await;
    bob.register("bob", "bob's long password, too").await;
    alice.fill("#share-account", "bob").await;
    alice.click("#form-share button").await;
    alice
        .wait(
            "!document.getElementById('share-code').hidden",
            30,
            "the share code",
        )
        .await;
    let share_code = alice.text("#share-code-text").await;
    assert!(share_code.starts_with("custos-share-1:"), "{share_code}");
    alice.shots(&shots, "share").await;
    bob.click("#open-accept").await;
    bob.fill("#form-accept textarea[name=code]", &share_code)
        .await;
    bob.fill("#form-accept input[name=label]", "Alice's lamp")
        .await;
    bob.click("#form-accept button[type=submit]").await;
    bob.wait(
        &format!("document.querySelector(\"{card}\")"),
        30,
        "the shared device in bob's list",
    )
    .await;
    let relay = relay_state(d);
    let want = if relay == "on" { "off" } else { "on" };
    bob.toggle(&device, want).await;
    wait_relay(d, want).await;

    // Revoke: the hub drops the share and the device takes a list without bob.
    alice.click("#members button[data-account='bob']").await;
    alice
        .wait(
            "document.getElementById('share-msg').textContent.includes('can no longer control it')",
            30,
            "the revocation",
        )
        .await;
    bob.wait(
        &format!("!document.querySelector(\"{card}\")"),
        15,
        "the device gone from bob's list",
    )
    .await;

    // Offline: the toggle is disabled; a command sent just before the device went away waits, and says so,
    // and is carried out when the device comes back.
    alice.click("#view-device [data-back]").await;
    alice
        .wait("document.body.dataset.view === 'devices'", 10, "the list")
        .await;
    let before = relay_state(d);
    let after = if before == "on" { "off" } else { "on" };
    let _ = dev.kill();
    let _ = dev.wait();
    alice.click(&format!("{card} .switch")).await;
    alice
        .wait(
            &format!("document.querySelector(\"{card} .note\").textContent.includes('offline')"),
            30,
            "the page saying the command waits for the offline device",
        )
        .await;
    alice
        .wait(
            &format!("document.querySelector(\"{card}\").dataset.online === 'false' && document.querySelector(\"{card} .switch\").disabled"),
            30,
            "the device offline and its toggle disabled",
        )
        .await;
    assert_eq!(relay_state(d), before);
    dev = agent(d, &url);
    alice
        .wait(
            &format!("document.querySelector(\"{card} .note\").textContent === 'Done: the device says {after}.'"),
            60,
            "the queued command done after the device came back",
        )
        .await;
    wait_relay(d, after).await;

    // Nothing the pages sent carries a secret or a reading.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("dev").join("device.json")).unwrap()).unwrap();
    let udk = hex::decode(state["user_device_key"].as_str().unwrap()).unwrap();
    let code = hex::decode(owner_code.replace('-', "")).unwrap();
    let member_key = hex::decode(share_code.rsplit(':').next().unwrap()).unwrap();
    let mut secrets: Vec<(&str, Vec<u8>)> = Vec::new();
    for f in forms(&udk) {
        secrets.push(("the user–device key", f));
    }
    for f in forms(&code) {
        secrets.push(("the owner code", f));
    }
    secrets.push(("the owner code as typed", owner_code.clone().into_bytes()));
    for f in forms(&member_key) {
        secrets.push(("the member key", f));
    }
    secrets.push(("a plaintext reading", b"temp_c".to_vec()));
    secrets.push(("the share code", b"custos-share-1".to_vec()));
    let mut requests = alice.sent();
    requests.extend(bob.sent());
    assert!(
        requests
            .iter()
            .any(|r| r.method == "POST" && r.url.ends_with("/control")),
        "no command was captured: {requests:?}"
    );
    assert!(requests.iter().any(|r| r.url.contains("/pairing/")));
    for r in &requests {
        for (what, s) in &secrets {
            for part in [r.url.as_bytes(), r.headers.as_bytes(), &r.body] {
                assert!(
                    !contains(part, s),
                    "{what} went to the hub in {} {}",
                    r.method,
                    r.url
                );
            }
        }
    }
    println!(
        "{} requests checked ({} commands)",
        requests.len(),
        requests
            .iter()
            .filter(|r| r.method == "POST" && r.url.ends_with("/control"))
            .count()
    );

    // Logging out ends the session: the page returns to the login form.
    alice.click("#logout").await;
    alice
        .wait(
            "document.body.dataset.view === 'login'",
            10,
            "the login form",
        )
        .await;

    let _ = dev.kill();
    let _ = dev.wait();
    let _ = hub.kill();
    let _ = hub.wait();
}

/// A hub (or anyone on the way) that serves another WebAssembly module than the one index.html names: the browser
/// refuses it, and the page says it cannot run rather than running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_webassembly_module_is_refused() {
    use chromiumoxide::cdp::browser_protocol::fetch;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let port = common::free_port();
    let url = common::hub_url(port);
    let mut hub = common::serve(d, &["--data-dir", "hub"], port);
    let (status, wasm) =
        tokio::task::spawn_blocking(move || common::get(port, "/custos_web_bg.wasm"))
            .await
            .unwrap();
    assert_eq!(status, 200);
    assert!(wasm.starts_with(b"\0asm"));
    let browser = launch(&d.join("chromium")).await;
    let ui = Ui::blank(&browser, "victim").await;
    ui.page
        .execute(fetch::EnableParams {
            patterns: Some(vec![fetch::RequestPattern {
                url_pattern: Some("*custos_web_bg.wasm".into()),
                ..Default::default()
            }]),
            handle_auth_requests: None,
        })
        .await
        .unwrap();
    let mut paused = ui
        .page
        .event_listener::<fetch::EventRequestPaused>()
        .await
        .unwrap();
    let page = ui.page.clone();
    // The module with one byte changed: not the one index.html names.
    let mut evil = wasm.clone();
    let at = evil.len() / 2;
    evil[at] ^= 0x01;
    let swapped = Arc::new(Mutex::new(0));
    let count = swapped.clone();
    tokio::spawn(async move {
        while let Some(ev) = paused.next().await {
            let mut f = fetch::FulfillRequestParams::new(ev.request_id.clone(), 200);
            f.response_headers = Some(vec![fetch::HeaderEntry::new(
                "content-type",
                "application/wasm",
            )]);
            f.body = Some(
                base64::engine::general_purpose::STANDARD
                    .encode(&evil)
                    .into(),
            );
            page.execute(f).await.unwrap();
            *count.lock().unwrap() += 1;
        }
    });
    ui.page.goto(url.as_str()).await.unwrap();
    ui.wait(
        "document.getElementById('banner').textContent.startsWith('This browser cannot run the dashboard')",
        30,
        "the page refusing the module",
    )
    .await;
    assert!(
        *swapped.lock().unwrap() >= 1,
        "the module was never swapped"
    );
    let ready: bool = ui.eval("document.body.dataset.ready === 'true'").await;
    assert!(!ready, "the page ran with a module it did not name");
    let form_hidden: bool = ui
        .eval("document.getElementById('form-login').hidden")
        .await;
    assert!(
        form_hidden,
        "the login form is offered on a page that cannot run"
    );
    let _ = hub.kill();
    let _ = hub.wait();
}
