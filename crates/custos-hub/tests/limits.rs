//! The hub's limits against hostile clients, on a real hub over loopback sockets: slow and idle connections are
//! closed, one address cannot take every connection, anonymous writes are rate limited per address, bodies have
//! a deadline and a budget, load classes shed load, and the open-file limit is raised.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use custos_hub::serve::{Limits, Rate, Running, ServeConfig, spawn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// The longest any one test may run.
const BOUND: Duration = Duration::from_secs(30);

async fn start(limits: Limits) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let hub = spawn(ServeConfig {
        registry: None,
        data_dir: dir.path().join("hub"),
        listen: "127.0.0.1:0".parse().unwrap(),
        database: None,
        mqtt: None,
        accounts: Default::default(),
        limits,
        tls: custos_hub::serve::HubTls::Plain,
    })
    .await
    .unwrap();
    (hub, dir)
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    socket.connect(to).await.unwrap()
}

/// Reads until the peer closes (or resets) the connection; returns what was read.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response head and its `Content-Length` body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return text;
            }
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a whole response: {text:?}");
        out.extend_from_slice(&buf[..n]);
    }
}

fn client(from: [u8; 4]) -> reqwest::Client {
    custos_client::tls::http_client(
        reqwest::Client::builder()
            .no_proxy()
            .local_address(IpAddr::from(from)),
        &custos_client::TlsTrust::System,
    )
    .unwrap()
}

const DEVICE: &str = "0011223344556677";

#[tokio::test]
async fn slow_headers_are_cut_at_the_header_timeout() {
    let (hub, _dir) = start(Limits {
        header_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    timeout(BOUND, async {
        let stream = TcpStream::connect(hub.addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let started = Instant::now();
        // Slowloris: a header line every 100 ms, never the blank line that ends the head.
        let drip = tokio::spawn(async move {
            write
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n")
                .await?;
            for i in 0.. {
                tokio::time::sleep(Duration::from_millis(100)).await;
                write.write_all(format!("X-{i}: a\r\n").as_bytes()).await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut buf = [0u8; 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "closed only after {took:?}");
        drip.abort();
    })
    .await
    .expect("a slowloris connection was never closed");
    hub.stop().await.unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let (hub, _dir) = start(Limits {
        header_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    timeout(BOUND, async {
        // A connection that never sends anything.
        let mut silent = TcpStream::connect(hub.addr).await.unwrap();
        let started = Instant::now();
        assert!(read_to_close(&mut silent).await.is_empty());
        assert!(started.elapsed() < Duration::from_secs(4));

        // A keep-alive connection idle after its first request.
        let mut idle = TcpStream::connect(hub.addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
            .await
            .unwrap();
        let response = read_response(&mut idle).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let started = Instant::now();
        assert!(read_to_close(&mut idle).await.is_empty());
        assert!(started.elapsed() < Duration::from_secs(4));
    })
    .await
    .expect("an idle connection was never closed");
    hub.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408() {
    let (hub, _dir) = start(Limits {
        body_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    timeout(BOUND, async {
        let mut stream = TcpStream::connect(hub.addr).await.unwrap();
        let started = Instant::now();
        stream
            .write_all(
                b"POST /v1/requests HTTP/1.1\r\nHost: hub\r\nContent-Length: 1000000\r\n\r\nabc",
            )
            .await
            .unwrap();
        let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).to_string();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"request_timeout\""), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(4));
    })
    .await
    .expect("a body that never came was waited for");
    hub.stop().await.unwrap();
}

#[tokio::test]
async fn long_polls_are_not_cut_by_the_body_deadline() {
    let (hub, _dir) = start(Limits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    timeout(BOUND, async {
        let started = Instant::now();
        let r = client([127, 0, 0, 1])
            .get(format!(
                "{}/v1/pairing/{DEVICE}/to-device?wait=3",
                hub.url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(2900));
    })
    .await
    .unwrap();
    hub.stop().await.unwrap();
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let (hub, _dir) = start(Limits {
        max_connections: 4,
        max_connections_per_client: 2,
        ..Default::default()
    })
    .await;
    timeout(BOUND, async {
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = connect_from([127, 0, 0, 1], hub.addr).await;
            // A request answered proves the hub took the connection before the next one comes.
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
                .await
                .unwrap();
            assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
            held.push(s);
        }
        // A third connection from the same address is closed at once.
        let mut third = connect_from([127, 0, 0, 1], hub.addr).await;
        let _ = third
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
            .await;
        let closed = timeout(Duration::from_secs(2), read_to_close(&mut third))
            .await
            .expect("a connection over the per-address cap was kept open");
        assert!(closed.is_empty());

        // Another address is served.
        for _ in 0..2 {
            let mut other = connect_from([127, 0, 0, 2], hub.addr).await;
            other
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
                .await
                .unwrap();
            assert!(read_response(&mut other).await.starts_with("HTTP/1.1 200"));
            held.push(other);
        }

        // The hub is at its global limit: a fifth connection waits (in the backlog) until one closes.
        let mut fifth = connect_from([127, 0, 0, 3], hub.addr).await;
        fifth
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
            .await
            .unwrap();
        let mut byte = [0u8; 1];
        assert!(
            timeout(Duration::from_millis(500), fifth.read(&mut byte))
                .await
                .is_err(),
            "served beyond the connection limit"
        );
        drop(held.remove(0));
        let response = read_response(&mut fifth).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    })
    .await
    .expect("bounded");
    hub.stop().await.unwrap();
}

#[tokio::test]
async fn anonymous_writes_are_rate_limited_per_address() {
    let (hub, _dir) = start(Limits {
        write_rate: Rate {
            per_second: 1,
            burst: 3,
        },
        read_rate: Rate {
            per_second: 1,
            burst: 3,
        },
        ..Default::default()
    })
    .await;
    timeout(BOUND, async {
        let one = client([127, 0, 0, 1]);
        let mut limited = None;
        for _ in 0..10 {
            let r = one
                .post(format!("{}/v1/requests", hub.url()))
                .body("not a request")
                .send()
                .await
                .unwrap();
            if r.status() == 429 {
                limited = Some(r);
                break;
            }
            assert_eq!(r.status(), 400);
        }
        let r = limited.expect("a burst of writes was never limited");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"], "rate_limited");

        // Another address is not limited by the first one's requests.
        let r = client([127, 0, 0, 2])
            .post(format!("{}/v1/requests", hub.url()))
            .body("not a request")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);

        // Device uplinks are never limited per address: many devices share one NAT address.
        for _ in 0..10 {
            let r = one
                .post(format!("{}/v1/devices/{DEVICE}/uplinks", hub.url()))
                .body(vec![0u8, 1, 0])
                .send()
                .await
                .unwrap();
            assert_ne!(r.status(), 429);
        }
    })
    .await
    .expect("bounded");
    hub.stop().await.unwrap();
}

#[tokio::test]
async fn the_body_budget_refuses_rather_than_buffers() {
    let (hub, _dir) = start(Limits {
        max_body: 1000,
        body_budget: 1000,
        body_timeout: Duration::from_secs(20),
        ..Default::default()
    })
    .await;
    timeout(BOUND, async {
        // One upload announces the whole budget and holds it, sending only a few bytes.
        let mut slow = TcpStream::connect(hub.addr).await.unwrap();
        slow.write_all(
            b"POST /v1/pairing/0011223344556677/to-device HTTP/1.1\r\nHost: hub\r\nContent-Length: 1000\r\n\r\nabc",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let other = client([127, 0, 0, 2]);
        let started = Instant::now();
        let r = other
            .post(format!("{}/v1/pairing/{DEVICE}/to-device", hub.url()))
            .body(vec![7u8; 500])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(r.headers()["retry-after"], "1");
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"], "busy");

        // Once the first upload is gone, the budget is back.
        drop(slow);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = other
                .post(format!("{}/v1/pairing/{DEVICE}/to-device", hub.url()))
                .body(vec![7u8; 500])
                .send()
                .await
                .unwrap();
            // Past the budget, the request reaches the relay, which refuses it: the device does not wait.
            if r.status() != 503 {
                assert_eq!(r.status(), 403);
                break;
            }
            assert!(Instant::now() < deadline, "the budget was not given back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("bounded");
    hub.stop().await.unwrap();
}

#[tokio::test]
async fn a_saturated_class_sheds_load_and_ingest_goes_on() {
    let (hub, _dir) = start(Limits {
        long_poll_concurrency: 1,
        ..Default::default()
    })
    .await;
    timeout(BOUND, async {
        let url = hub.url();
        let waiting = tokio::spawn({
            let url = url.clone();
            async move {
                client([127, 0, 0, 1])
                    .get(format!("{url}/v1/pairing/{DEVICE}/to-device?wait=3"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = client([127, 0, 0, 2]);
        let r = c
            .get(format!("{url}/v1/pairing/{DEVICE}/to-keeper?wait=3"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        // Other classes are served meanwhile.
        let r = c
            .post(format!("{url}/v1/devices/{DEVICE}/uplinks"))
            .body(vec![0u8, 1, 0])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        // Served, not busy: without the operator token the listing is refused as unauthorized.
        let r = c.get(format!("{url}/v1/devices")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(waiting.await.unwrap(), 200);
    })
    .await
    .expect("bounded");
    hub.stop().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn the_soft_open_file_limit_is_raised() {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    let lowered = hard.min(1024).min(soft);
    if lowered == hard {
        // Nothing to raise to on this machine.
        return;
    }
    rlimit::setrlimit(rlimit::Resource::NOFILE, lowered, hard).unwrap();
    let (hub, _dir) = start(Limits::default()).await;
    assert_eq!(
        rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap(),
        (hard, hard)
    );
    hub.stop().await.unwrap();
}
