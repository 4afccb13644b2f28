//! What the browser tests and the dashboard benchmark share: Debian's Chromium launched headless, pages in their own
//! browser contexts driven over the DevTools protocol with every request they send recorded, and a device agent
//! with a simulated relay.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
pub struct Sent {
    pub method: String,
    pub url: String,
    pub headers: String,
    pub body: Vec<u8>,
}

pub fn chromium() -> PathBuf {
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

pub async fn launch(profile: &Path) -> Browser {
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
pub struct Ui {
    pub page: Page,
    sent: Arc<Mutex<Vec<Sent>>>,
    who: &'static str,
}

impl Ui {
    pub async fn open(browser: &Browser, url: &str, who: &'static str) -> Self {
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
    pub async fn blank(browser: &Browser, who: &'static str) -> Self {
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

    pub async fn eval<T: serde::de::DeserializeOwned>(&self, js: &str) -> T {
        self.page
            .evaluate(js)
            .await
            .unwrap_or_else(|e| panic!("{}: {js}: {e}", self.who))
            .into_value()
            .unwrap_or_else(|e| panic!("{}: {js}: {e}", self.who))
    }

    /// Waits until the JavaScript expression `cond` is true.
    pub async fn wait(&self, cond: &str, secs: u64, what: &str) {
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

    pub async fn text(&self, selector: &str) -> String {
        self.eval(&format!(
            "(document.querySelector({selector:?}) || {{}}).textContent || ''"
        ))
        .await
    }

    pub async fn click(&self, selector: &str) {
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
    pub async fn fill(&self, selector: &str, text: &str) {
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

    pub async fn register(&self, name: &str, password: &str) {
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

    /// Adds `device` with its owner code under `label` (the page pairs and claims it), and waits until it shows
    /// online. With `shots`, screenshots the filled form first.
    pub async fn add_device(
        &self,
        device: &str,
        owner_code: &str,
        label: &str,
        shots: Option<&Path>,
    ) {
        self.click("#open-add").await;
        self.wait("document.body.dataset.view === 'add'", 10, "the add form")
            .await;
        self.fill("#form-add input[name=device]", device).await;
        self.fill("#form-add input[name=code]", owner_code).await;
        self.fill("#form-add input[name=label]", label).await;
        if let Some(dir) = shots {
            self.shots(dir, "add-device").await;
        }
        self.click("#add-submit").await;
        let card = Self::card(device);
        self.wait(
            &format!("document.querySelector(\"{card}\") && document.querySelector(\"{card}\").dataset.online === 'true'"),
            90,
            "the device online in the list",
        )
        .await;
    }

    pub fn card(device: &str) -> String {
        format!("li.device[data-device='{device}']")
    }

    /// Clicks the device's toggle and waits until the page shows the device's verified answer.
    pub async fn toggle(&self, device: &str, want: &str) {
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
    pub async fn shots(&self, dir: &Path, name: &str) {
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

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }
}

pub fn custos(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(crate::common::custos(dir, args)).unwrap()
}

pub fn agent(dir: &Path, url: &str) -> Child {
    crate::common::trusting(&mut Command::new(env!("CARGO_BIN_EXE_custos")), dir)
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

pub fn relay_state(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("dev").join("current.state"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub async fn wait_relay(dir: &Path, want: &str) {
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
pub fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let h = hex::encode(secret);
    vec![
        secret.to_vec(),
        h.clone().into_bytes(),
        h.to_uppercase().into_bytes(),
    ]
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A hub (HTTPS, cheap password hashing, offline after 3 s) in `dir/hub` and a device made in `dir/dev` and
/// admitted to it, not yet running.
pub struct Fixture {
    pub hub: Child,
    pub port: u16,
    pub url: String,
    pub device: String,
    pub owner_code: String,
}

impl Fixture {
    pub fn start(d: &Path) -> Self {
        let port = crate::common::free_port();
        let url = crate::common::hub_url(port);
        let hub = crate::common::serve(
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
        let made = crate::common::make_admitted_device(d, "dev");
        let device = made["device"].as_str().unwrap().to_string();
        Self {
            hub,
            port,
            url,
            device,
            owner_code: made["owner_code"].as_str().unwrap().to_string(),
        }
    }
}
