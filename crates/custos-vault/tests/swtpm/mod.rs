//! A private software TPM per test: `swtpm` on free loopback ports, stopped on drop. Shared by tests/tpm.rs and
//! benches/tpm.rs. A missing `swtpm` fails loudly: these tests are never skipped.

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A running `swtpm socket --tpm2` serving commands on `port` and control on `port + 1`.
pub struct Swtpm {
    child: Child,
    port: u16,
    state: PathBuf,
}

impl Swtpm {
    /// Starts swtpm with its state in `state` (a fresh directory makes a fresh TPM; the same directory after a
    /// restart is the same TPM).
    pub fn start(state: &Path) -> Self {
        // The two ports are probed, then released for swtpm; another process may take one in between, so retry.
        for _ in 0..20 {
            let port = free_port_pair();
            let mut child = match Command::new("swtpm")
                .args(["socket", "--tpm2"])
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--tpmstate")
                .arg(format!("dir={}", state.display()))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                    "swtpm is not installed, and the TPM tests need it: \
                     apt-get install swtpm swtpm-tools (and libtss2-dev to build)"
                ),
                Err(e) => panic!("cannot start swtpm: {e}"),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: most likely a port was taken; try other ports
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self {
                        child,
                        port,
                        state: state.to_path_buf(),
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("swtpm did not listen on 127.0.0.1:{port} within 10 s");
                }
                sleep(Duration::from_millis(20));
            }
        }
        panic!("swtpm did not start on any of 20 port pairs");
    }

    /// The TCTI string for tss-esapi.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Stops this swtpm (gracefully, so its state is on disk) and starts a new one on the same state.
    pub fn restart(self) -> Self {
        let state = self.state.clone();
        drop(self);
        Self::start(&state)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        // SIGTERM lets swtpm write its state; SIGKILL if it does not exit in time.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port P such that P and P + 1 were both free on 127.0.0.1 a moment ago.
fn free_port_pair() -> u16 {
    loop {
        let a = TcpListener::bind(("127.0.0.1", 0)).expect("bind a loopback port");
        let port = a.local_addr().expect("local address").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}
