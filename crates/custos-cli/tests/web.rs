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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::network::{EnableParams, EventRequestWillBeSent};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams,
};
use chromiumoxide::page::{Page, ScreenshotParams};
use futures_util::StreamExt;

/// One request a page sent, as the browser saw it.
#[derive(Clone, Debug)]
struct Sent {
    method: String,
    url: String,
    headers: String,
    body: Vec<u8>,
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("CUSTOS_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "these tests need Chromium at {} (Debian: apt-get install chromium; or set CUSTOS_CHROMIUM)",
        path.display()
    );
    path
}

async fn launch(profile: &Path) -> Browser {
    let config = BrowserConfig::builder()
        .chrome_executable(chromium())
        .new_headless_mode()
        .no_sandbox()
        .user_data_dir(profile)
        .window_size(1280, 800)
        .viewport(None)
        // The machine's network is closed: no background traffic, nothing but the hub on loopback.
        .args([
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .launch_timeout(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (browser, mut handler) = Browser::launch(config).await.unwrap();
    tokio::spawn(async move { while handler.next().await.is_some() {} });
    browser
}

/// A page in its own browser context (its own cookies and IndexedDB), with every request it sends recorded.
struct Ui {
    page: Page,
    sent: Arc<Mutex<Vec<Sent>>>,
    who: &'static str,
}

impl Ui {
    async fn open(browser: &Browser, url: &str, who: &'static str) -> Self {
        let ui = Self::blank(browser, who).await;
        ui.page.goto(url).await.unwrap();
        ui.wait(
            "document.body.dataset.ready === 'true'",
            30,
            "the page to load",
        )
        .await;
        ui
    }

    /// A blank page in a fresh browser context, recording its requests.
    async fn blank(browser: &Browser, who: &'static str) -> Self {
        let ctx = browser
            .create_browser_context(CreateBrowserContextParams::default())
            .await
            .unwrap();
        let page = browser
            .new_page(
                CreateTargetParams::builder()
                    .url("about:blank")
                    .browser_context_id(ctx)
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
        page.execute(EnableParams::default()).await.unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let mut events = page
            .event_listener::<EventRequestWillBeSent>()
            .await
            .unwrap();
        let log = sent.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                let mut body = Vec::new();
                for entry in ev.request.post_data_entries.iter().flatten() {
                    if let Some(b) = &entry.bytes {
                        let s: &str = b.as_ref();
                        body.extend(base64::engine::general_purpose::STANDARD.decode(s).unwrap());
                    }
                }
                log.lock().unwrap().push(Sent {
                    method: ev.request.method.clone(),
                    url: ev.request.url.clone(),
                    headers: serde_json::to_string(&ev.request.headers).unwrap(),
                    body,
                });
            }
        });
        Self { page, sent, who }
    }

    async fn eval<T: serde::de::DeserializeOwned>(&self, js: &str) -> T {
        self.page
            .evaluate(js)
            .await
            .unwrap_or_else(|e| panic!("{}: {js}: {e}", self.who))
            .into_value()
            .unwrap_or_else(|e| panic!("{}: {js}: {e}", self.who))
    }

    /// Waits until the JavaScript expression `cond` is true.
    async fn wait(&self, cond: &str, secs: u64, what: &str) {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let ok: bool = self
                .page
                .evaluate(format!("!!({cond})"))
                .await
                .ok()
                .and_then(|v| v.into_value().ok())
                .unwrap_or(false);
            if ok {
                return;
            }
            if Instant::now() > until {
                let state: String = self
                    .eval("document.body.dataset.view + ' | ' + document.querySelector('main').innerText + ' | ' + document.getElementById('devices').outerHTML")
                    .await;
                panic!(
                    "{}: waited {secs} s for {what} ({cond}); the page shows: {state}",
                    self.who
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn text(&self, selector: &str) -> String {
        self.eval(&format!(
            "(document.querySelector({selector:?}) || {{}}).textContent || ''"
        ))
        .await
    }

    async fn click(&self, selector: &str) {
        let e = self
            .page
            .find_element(selector)
            .await
            .unwrap_or_else(|e| panic!("{}: no {selector}: {e}", self.who));
        if let Err(err) = e.click().await {
            let state: String = self
                .eval(
                    "document.body.dataset.view + ' | ' + document.querySelector('main').innerText",
                )
                .await;
            panic!(
                "{}: cannot click {selector}: {err}; the page shows: {state}",
                self.who
            );
        }
    }

    /// Types `text` into the empty field `selector`, with key events as a person would.
    async fn fill(&self, selector: &str, text: &str) {
        let _: bool = self
            .eval(&format!(
                "(document.querySelector({selector:?}).value = '', true)"
            ))
            .await;
        self.page
            .find_element(selector)
            .await
            .unwrap()
            .click()
            .await
            .unwrap()
            .type_str(text)
            .await
            .unwrap();
    }

    async fn register(&self, name: &str, password: &str) {
        self.click("#tab-register").await;
        self.fill("#form-login input[name=name]", name).await;
        self.fill("#form-login input[name=password]", password)
            .await;
        self.fill("#form-login input[name=confirm]", password).await;
        self.click("#login-submit").await;
        self.wait(
            "document.body.dataset.view === 'devices'",
            30,
            "the device list",
        )
        .await;
    }

    fn card(device: &str) -> String {
        format!("li.device[data-device='{device}']")
    }

    /// Clicks the device's toggle and waits until the page shows the device's verified answer.
    async fn toggle(&self, device: &str, want: &str) {
        let card = Self::card(device);
        self.wait(
            &format!("!document.querySelector(\"{card} .switch\").disabled"),
            30,
            "an enabled toggle",
        )
        .await;
        self.click(&format!("{card} .switch")).await;
        self.wait(
            &format!(
                "document.querySelector(\"{card} .note\").textContent === 'Done: the device says {want}.'"
            ),
            30,
            &format!("the device's answer {want}"),
        )
        .await;
    }

    /// Screenshots at a phone's and a desktop's size, into `dir` as `{name}-phone.png` and `{name}-desktop.png`.
    async fn shots(&self, dir: &Path, name: &str) {
        for (label, w, h, scale, mobile) in [
            ("phone", 390, 844, 2.0, true),
            ("desktop", 1280, 800, 1.0, false),
        ] {
            self.page
                .execute(SetDeviceMetricsOverrideParams::new(w, h, scale, mobile))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let png = self
                .page
                .screenshot(
                    ScreenshotParams::builder()
                        .format(CaptureScreenshotFormat::Png)
                        .build(),
                )
                .await
                .unwrap();
            assert!(png.starts_with(b"\x89PNG"), "{name}-{label} is no PNG");
            std::fs::write(dir.join(format!("{name}-{label}.png")), png).unwrap();
        }
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }
}

fn custos(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(common::custos(dir, args)).unwrap()
}

fn agent(dir: &Path, url: &str) -> Child {
    common::trusting(&mut Command::new(env!("CARGO_BIN_EXE_custos")), dir)
        .args([
            "device",
            "run",
            "--state-dir",
            "dev",
            "--hub",
            url,
            "--source",
            "simulated",
            "--every",
            "1s",
            "--actuator",
            "relay",
            "--heartbeat",
            "1s",
            "--pair-timeout",
            "300s",
        ])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn relay_state(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("dev").join("current.state"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

async fn wait_relay(dir: &Path, want: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while relay_state(dir) != want {
        assert!(
            Instant::now() < until,
            "the device's relay is `{}`, not `{want}`",
            relay_state(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every way a secret could be written in a request: raw, hex (both cases).
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let h = hex::encode(secret);
    vec![
        secret.to_vec(),
        h.clone().into_bytes(),
        h.to_uppercase().into_bytes(),
    ]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_pairs_switches_shares_and_charts_without_the_hub_seeing_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let shots = match std::env::var_os("CUSTOS_WEB_SCREENSHOTS") {
        Some(p) => std::path::absolute(p).unwrap(),
        None => d.join("shots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let port = common::free_port();
    let url = common::hub_url(port);
    let mut hub = common::serve(
        d,
        &[
            "--data-dir",
            "hub",
            "--password-memory-kib",
            "8",
            "--password-iterations",
            "1",
            "--offline-after",
            "3s",
        ],
        port,
    );
    let made: serde_json::Value = serde_json::from_str(&custos(
        d,
        &["device", "make", "--state-dir", "dev", "--json"],
    ))
    .unwrap();
    let device = made["device"].as_str().unwrap().to_string();
    let owner_code = made["owner_code"].as_str().unwrap().to_string();
    custos(
        d,
        &[
            "hub",
            "admit",
            "--data-dir",
            "hub",
            "--device",
            &device,
            "--code",
            made["join_code"].as_str().unwrap(),
        ],
    );
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
    alice.click("#open-add").await;
    alice
        .wait("document.body.dataset.view === 'add'", 10, "the add form")
        .await;
    alice.fill("#form-add input[name=device]", &device).await;
    alice.fill("#form-add input[name=code]", &owner_code).await;
    alice.fill("#form-add input[name=label]", "Desk lamp").await;
    alice.shots(&shots, "add-device").await;
    alice.click("#add-submit").await;
    let card = Ui::card(&device);
    alice
        .wait(
            &format!("document.querySelector(\"{card}\") && document.querySelector(\"{card}\").dataset.online === 'true'"),
            90,
            "the device online in the list",
        )
        .await;
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
