//! The web dashboard, measured in headless Chromium against a real hub (HTTPS, loopback) and a real device agent:
//!
//! - click to verified answer: the time from clicking a device's toggle to the page showing the device's answer,
//!   opened and verified in the page's WebAssembly, over `CUSTOS_BENCH_TOGGLES` toggles (default 100), against the
//!   raw baseline of the same run: a plain `fetch` round trip from the same page to the same hub;
//! - load to interactive: navigation start to a usable page (module compiled, keys opened, session checked), in
//!   fresh browser contexts, median of 10;
//! - the WebAssembly module the hub serves, raw and gzipped.
//!
//! `cargo bench -p custos-cli --bench web` (needs Chromium, as the tests do).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "../tests/common/browser.rs"]
mod browser;

use browser::*;

fn median_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[(((v.len() - 1) as f64) * p).round() as usize];
    (at(0.5), at(0.99))
}

async fn run() {
    let n: usize = std::env::var("CUSTOS_BENCH_TOGGLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let fx = Fixture::start(d);
    let mut dev = agent(d, &fx.url);
    let browser = launch(&d.join("chromium")).await;
    let ui = Ui::open(&browser, &fx.url, "bench").await;
    ui.register("bench", "a long bench password").await;
    ui.add_device(&fx.device, &fx.owner_code, "Bench lamp", None)
        .await;

    let _: bool = ui.eval("(window.custosMetrics.toggles = [], true)").await;
    for i in 0..n {
        ui.toggle(&fx.device, if i % 2 == 0 { "on" } else { "off" })
            .await;
    }
    let toggles: Vec<f64> = ui.eval("window.custosMetrics.toggles").await;
    let raw: Vec<f64> = ui
        .eval(&format!(
            "(async () => {{ const t = []; for (let i = 0; i < {n}; i++) {{ const s = performance.now(); \
             await (await fetch('/v1/hub', {{ cache: 'no-store' }})).text(); t.push(performance.now() - s); }} \
             return t; }})()"
        ))
        .await;
    let (t50, t99) = median_p99(toggles);
    let (r50, r99) = median_p99(raw);

    let mut loads = Vec::new();
    for _ in 0..10 {
        let fresh = Ui::open(&browser, &fx.url, "visitor").await;
        loads.push(fresh.eval::<f64>("window.custosMetrics.ready").await);
        fresh.page.clone().close().await.unwrap();
    }
    let (l50, l99) = median_p99(loads);

    let wasm = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../custos-hub/web/custos_web_bg.wasm"
    ))
    .unwrap();
    let gz = std::process::Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../custos-hub/web/custos_web_bg.wasm"
        ))
        .output()
        .unwrap()
        .stdout
        .len();

    println!("web dashboard, headless Chromium, loopback HTTPS, {n} toggles");
    println!(
        "  click to verified answer   p50 {t50:7.2} ms   p99 {t99:7.2} ms   ({:.1}x the raw round trip)",
        t50 / r50
    );
    println!("  raw fetch round trip       p50 {r50:7.2} ms   p99 {r99:7.2} ms   (baseline)");
    println!(
        "  load to interactive        p50 {l50:7.1} ms   p99 {l99:7.1} ms   (10 fresh contexts)"
    );
    println!(
        "  WebAssembly module         {} bytes, {} gzipped ({:.0} KiB of the 300 KiB goal)",
        wasm.len(),
        gz,
        gz as f64 / 1024.0
    );
    let _ = dev.kill();
    let _ = dev.wait();
    let mut hub = fx.hub;
    let _ = hub.kill();
    let _ = hub.wait();
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
