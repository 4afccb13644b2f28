//! The device core on a Cortex-M4: `firmware/cortex-m4` built for `thumbv7em-none-eabihf` and run under QEMU's
//! `mps2-an386` board, every line it prints checked against the same computation on the host, and its flash and RAM
//! measured against the goals (64 KiB of flash, 16 KiB of RAM for the build without admission).
//!
//! The admission build joins a hub that this test plays on the host: the firmware writes its handshake messages
//! to files in QEMU's working directory through semihosting and waits for the hub's answers there
//! (docs/firmware.md). Both sides use wire.md Vector 4's fixed keys, so the host also knows every byte to expect.
//!
//! Needs `qemu-system-arm` (Debian: `apt-get install qemu-system-arm`) and the Rust target
//! (`rustup target add thumbv7em-none-eabihf`); without either the tests fail, saying which is missing.
//! `cargo test -p custos-device --test firmware_qemu -- --nocapture` prints the figures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use custos_proto::admission::HubAwaitingCode;
use custos_proto::uplink::{LinkKeys, UPLINK_OVERHEAD, open_uplink, seal_uplink};
use custos_proto::{
    Crypto, DeviceId, Epoch, MasterSecret, NodeSecret, Opener, RustCrypto, Schedule, Secret, Span,
    Suite, TreeSpec, UnixTime,
};

const TARGET: &str = "thumbv7em-none-eabihf";
/// How long QEMU may run before the test kills it.
const QEMU_TIMEOUT: Duration = Duration::from_secs(60);
/// The goals for the build without admission.
const FLASH_GOAL: u64 = 64 * 1024;
const RAM_GOAL: u64 = 16 * 1024;

// The inputs the firmware holds (firmware/cortex-m4/src/main.rs), from docs/wire.md.
const DEVICE: DeviceId = DeviceId([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
/// Vector 1's master secret: the host derives the DPK the firmware was given from it.
const MASTER: [u8; 32] = {
    let mut m = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        m[i] = i as u8;
        i += 1;
    }
    m
};
/// Vector 5's server–device key (the build without admission).
const SDK: &str = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";
/// One reading: days after 2026-01-01 and seconds into the day, the text, the record nonce and the uplink's
/// sequence number.
struct Reading {
    day: u64,
    second: u64,
    text: &'static str,
    nonce: u64,
    seq: u64,
}
const READINGS: [Reading; 3] = [
    Reading {
        day: 73,
        second: 14 * 3600 + 20 * 60,
        text: r#"{"t":"2026-03-15T14:20:00Z","temp_c":21.5}"#,
        nonce: 1,
        seq: 5,
    },
    Reading {
        day: 74,
        second: 8 * 3600,
        text: r#"{"t":"2026-03-16T08:00:00Z","temp_c":19.0}"#,
        nonce: 6,
        seq: 6,
    },
    Reading {
        day: 91,
        second: 12 * 3600 + 30,
        text: r#"{"t":"2026-04-02T12:00:30Z","temp_c":23.25}"#,
        nonce: 7,
        seq: 7,
    },
];
/// wire.md §4 and Vector 5: the first reading's record, and its uplink as sequence number 5 under Vector 5's key.
const VECTOR1_RECORD: &str = "11001122334455667700010000502f0000000000000001\
    90782d45af58fcc1470181ae752e73a5834cd334a9abc9f47949675ed4864bf71e06ba9fa8e65433c0f7\
    3aeb37ccae5b0a2bda14feb4e1f54c44";
const VECTOR5_TAG: &str = "18ad6ffae40ee0896d554affbf285a68";
/// wire.md Vector 4: the hub's keys, the code, and what the handshake must produce.
const HUB_STATIC: [u8; 32] = [0xb1; 32];
const HUB_EPHEMERAL: [u8; 32] = [0xe2; 32];
const DEVICE_STATIC: [u8; 32] = [0xd1; 32];
const JOIN_CODE: &[u8; 16] = b"0123456789abcdef";
const VECTOR4_HELLO: &str = "014c2817a9d668ed844d2f95b93b69ecb8485095783a015a424164b0d09702894f\
    920d2f980c8ccea2f0d875a148c52c1fae5534570d9f3dea";
const VECTOR4_FINISH: &str = "038aaec24b0f1bcdca4d467780485032d06dc2b0af1afa617fc907885652957d47\
    8a15ccd44bdf4d28eb333820e15a17ee48e9028d6b01f651cbfe48d7728d761a";
const VECTOR4_SDK: &str = "208d7736feca3299bb45c37eba327a85d5556fce42a97b92e82bdee5ba02c90b";
const VECTOR4_WELCOME: &str = "0436a75d62ea8d45f79c567f6b0f2cb052";

fn spec() -> TreeSpec {
    let year = Span::new(
        UnixTime::from_date(2026, 1, 1).unwrap(),
        UnixTime::from_date(2027, 1, 1).unwrap(),
    )
    .unwrap();
    TreeSpec::new(DEVICE, Epoch(1), Schedule::default(), year).unwrap()
}

fn secret(hex: &str) -> Secret {
    Secret::from_bytes(hex::decode(hex).unwrap().try_into().unwrap())
}

/// The firmware's frontier check value (firmware/cortex-m4/src/frontier.rs), computed on the host.
fn frontier_check(held: &[NodeSecret]) -> [u8; 16] {
    let mut acc = [0u8; 32];
    for n in held {
        let id = n.node();
        acc = RustCrypto.hmac_sha256(
            &acc,
            &[
                b"custos/fw/frontier",
                &[id.depth],
                &id.index.to_be_bytes(),
                n.secret().expose(),
            ],
        );
    }
    acc[..16].try_into().unwrap()
}

/// What the firmware must print after it holds `sdk`: for each reading, the frontier it moved to, the record and
/// the uplink. The host derives everything from the master secret, as the keeper would, and keeps its frontier in
/// a `Vec`, as the Linux agent does.
fn expected_readings(sdk: &Secret) -> Vec<String> {
    let (c, spec) = (RustCrypto, spec());
    let dpk = spec
        .root(&c, &MasterSecret::new(Secret::from_bytes(MASTER)))
        .unwrap();
    let link = LinkKeys::derive(&c, sdk).unwrap();
    let mut held = vec![dpk];
    let mut lines = Vec::new();
    for r in &READINGS {
        let at = UnixTime::new(spec.span().start().secs() + r.day * 86_400 + r.second).unwrap();
        held = spec
            .frontier(&c, &held, at)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        lines.push(format!(
            "frontier {} {}",
            held.len(),
            hex::encode(frontier_check(&held))
        ));
        let leaf = spec.leaf_at(at).unwrap();
        let holder = spec.holder(&held, spec.leaf_node(leaf)).unwrap().unwrap();
        let key = spec.leaf_key(&c, holder, leaf, Suite::AES256GCM).unwrap();
        let mut record = vec![0u8; r.text.len() + custos_proto::record::OVERHEAD];
        key.seal(&c, r.nonce.to_be_bytes(), r.text.as_bytes(), &mut record)
            .unwrap();
        let mut uplink = vec![0u8; record.len() + UPLINK_OVERHEAD];
        seal_uplink(&c, &link, DEVICE, r.seq, &record, &mut uplink).unwrap();
        lines.push(format!("record {}", hex::encode(&record)));
        lines.push(format!("uplink {}", hex::encode(&uplink)));
    }
    lines
}

/// Opens each uplink the firmware printed as the hub would (its tag under `sdk`), then the record inside with the
/// DPK, as the owner would: the readings come out.
fn open_printed_uplinks(lines: &[String], sdk: &Secret) {
    let (c, spec) = (RustCrypto, spec());
    let link = LinkKeys::derive(&c, sdk).unwrap();
    let dpk = [spec
        .root(&c, &MasterSecret::new(Secret::from_bytes(MASTER)))
        .unwrap()];
    let mut opener = Opener::new(&c, &spec, &dpk);
    let uplinks: Vec<Vec<u8>> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("uplink "))
        .map(|h| hex::decode(h).unwrap())
        .collect();
    assert_eq!(uplinks.len(), READINGS.len());
    for (msg, r) in uplinks.iter().zip(&READINGS) {
        let (seq, body) = open_uplink(&c, &link, DEVICE, msg)
            .expect("the hub verifies the firmware's uplink under the key the host holds");
        assert_eq!(seq, r.seq);
        let mut out = vec![0u8; body.len()];
        let (_, n) = opener.open(body, &mut out).unwrap();
        assert_eq!(&out[..n], r.text.as_bytes());
    }
}

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Fails, saying what to install, unless QEMU and the Rust target are there.
fn require_tools() {
    match Command::new("qemu-system-arm").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`qemu-system-arm --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "qemu-system-arm is needed to run the Cortex-M4 firmware test and was not found ({e}): \
             apt-get install qemu-system-arm"
        ),
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    let sysroot = PathBuf::from(String::from_utf8(sysroot.stdout).unwrap().trim());
    let lib = sysroot.join("lib/rustlib").join(TARGET).join("lib");
    assert!(
        lib.is_dir(),
        "the Rust target {TARGET} is not installed for the toolchain at {}: rustup target add {TARGET}",
        sysroot.display()
    );
}

/// One firmware build at a time: both builds share a target directory and one output path.
static BUILD: Mutex<()> = Mutex::new(());

/// Builds the firmware (with `features`) and copies the ELF into `dir`.
fn build(features: &[&str], dir: &Path) -> PathBuf {
    require_tools();
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let firmware = repo().join("firmware/cortex-m4");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--manifest-path")
        .arg(firmware.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(firmware.join("target"));
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    // The outer cargo's settings are for the host build of this test: a target directory, a build target, flags
    // or profile overrides meant for it would break or distort the firmware's build. Keep where crates come from.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = [
            "CARGO_HOME",
            "CARGO_NET_",
            "CARGO_HTTP_",
            "CARGO_REGISTR",
            "CARGO_TERM_",
        ]
        .iter()
        .any(|k| key.starts_with(k));
        let drop = (key.starts_with("CARGO_") && !keep)
            || key.starts_with("__CARGO")
            || [
                "CARGO",
                "RUSTFLAGS",
                "RUSTDOCFLAGS",
                "RUSTC_WORKSPACE_WRAPPER",
            ]
            .contains(&key);
        if drop {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().expect("cargo runs");
    assert!(
        status.success(),
        "building the firmware failed ({status}); is the target installed? rustup target add {TARGET}"
    );
    let name = if features.is_empty() {
        "seal.elf".to_string()
    } else {
        format!("{}.elf", features.join("-"))
    };
    let elf = dir.join(name);
    std::fs::copy(
        firmware
            .join("target")
            .join(TARGET)
            .join("release/custos-firmware"),
        &elf,
    )
    .unwrap();
    elf
}

/// The QEMU process, killed and reaped when dropped: a test that fails halfway (a message that differs, a hub
/// that refuses) leaves no emulator running in a deleted temporary directory.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// QEMU running the firmware in `cwd`, its output collected on threads.
struct Qemu {
    child: Reaped,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
    deadline: Instant,
}

impl Qemu {
    fn start(elf: &Path, cwd: &Path) -> Self {
        let mut child = Command::new("qemu-system-arm")
            .args(["-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic"])
            .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
            .arg(elf)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-arm starts");
        // Lossy: a stray byte in the output must show up in the comparison, not as a panic on this thread.
        let collect = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = r.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Self {
            child: Reaped(child),
            stdout,
            stderr,
            deadline: Instant::now() + QEMU_TIMEOUT,
        }
    }

    /// Kills QEMU, and fails with everything it printed.
    fn fail(mut self, why: &str) -> ! {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        let out = self.stdout.join().unwrap_or_default();
        let err = self.stderr.join().unwrap_or_default();
        panic!("{why}\n--- firmware stdout\n{out}--- stderr\n{err}");
    }

    /// Waits for the firmware to put `name` in `dir` (it writes `*.part` and renames, so the file is whole).
    fn wait_for_file(mut self, dir: &Path, name: &str) -> (Self, Vec<u8>) {
        loop {
            if let Ok(bytes) = std::fs::read(dir.join(name)) {
                return (self, bytes);
            }
            if let Ok(Some(status)) = self.child.0.try_wait() {
                self.fail(&format!(
                    "the firmware exited ({status}) before writing {name}"
                ));
            }
            if Instant::now() > self.deadline {
                self.fail(&format!(
                    "no {name} from the firmware within {QEMU_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops QEMU.
    fn kill(self) {
        drop(self.child);
    }

    /// Waits for QEMU to exit; returns the firmware's stdout lines. Fails if it did not exit with success.
    fn finish(mut self) -> Vec<String> {
        let status = loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > self.deadline {
                self.fail(&format!(
                    "QEMU still running after {QEMU_TIMEOUT:?}: killed"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = self.stdout.join().unwrap();
        let err = self.stderr.join().unwrap();
        assert!(
            status.success(),
            "the firmware failed ({status})\n--- stdout\n{out}--- stderr\n{err}"
        );
        out.lines().map(str::to_string).collect()
    }
}

/// Writes a message for the firmware the way it writes its own: whole, then renamed into place.
fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let part = dir.join(format!("{name}.part"));
    std::fs::write(&part, bytes).unwrap();
    std::fs::rename(&part, dir.join(format!("{name}.bin"))).unwrap();
}

/// One section of an ELF file: its name, whether it occupies memory on the target (`SHF_ALLOC`), its size.
struct Section {
    name: String,
    alloc: bool,
    size: u64,
}

/// The sections of an ELF32 little-endian file.
fn sections(elf: &[u8]) -> Vec<Section> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(
        (elf[4], elf[5]),
        (1, 1),
        "not a 32-bit little-endian ELF file"
    );
    let (shoff, shentsize, shnum, shstrndx) = (
        u32_at(0x20) as usize,
        usize::from(u16_at(0x2e)),
        usize::from(u16_at(0x30)),
        usize::from(u16_at(0x32)),
    );
    let header = |i: usize| shoff + i * shentsize;
    let strtab = u32_at(header(shstrndx) + 0x10) as usize;
    (0..shnum)
        .map(|i| {
            let h = header(i);
            let name_at = strtab + u32_at(h) as usize;
            let len = elf[name_at..].iter().position(|&b| b == 0).unwrap();
            Section {
                name: String::from_utf8_lossy(&elf[name_at..name_at + len]).into_owned(),
                alloc: u32_at(h + 0x08) & SHF_ALLOC != 0,
                size: u64::from(u32_at(h + 0x14)),
            }
        })
        .collect()
}

const SHF_ALLOC: u32 = 0x2;
/// The sections the figures are made of; the test fails if the target gets bytes in any other.
const COUNTED: [&str; 6] = [
    ".vector_table",
    ".text",
    ".rodata",
    ".data",
    ".bss",
    ".uninit",
];

/// The measurements the firmware prints after everything else, in this order: the admission build's heap, then
/// the stack. The host cannot predict their values, so they are the only lines it does not recompute.
const SEAL_MEASUREMENTS: &[&str] = &["stack_peak"];
const ADMISSION_MEASUREMENTS: &[&str] = &["heap_peak", "heap_arena", "stack_peak"];

/// Splits the firmware's lines into those the host recomputes and the values of the measurements `labels`, which
/// must be the last lines, once each and in that order (so no other line escapes the comparison).
fn measurements<'a>(lines: &'a [String], labels: &[&str]) -> (&'a [String], Vec<u64>) {
    assert!(
        lines.len() >= labels.len(),
        "the firmware printed {} lines, fewer than its {} measurements: {lines:?}",
        lines.len(),
        labels.len()
    );
    let (computed, measured) = lines.split_at(lines.len() - labels.len());
    let values = measured
        .iter()
        .zip(labels)
        .map(|(line, label)| {
            line.strip_prefix(label)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| {
                    panic!("expected `{label} <bytes>` among the last lines, got {line:?}")
                })
        })
        .collect();
    (computed, values)
}

/// Flash, RAM and heap of a run, from the ELF and what the firmware measured.
struct Footprint {
    flash: u64,
    static_ram: u64,
    stack_peak: u64,
    heap_arena: u64,
    heap_peak: Option<u64>,
}

impl Footprint {
    fn measure(elf: &Path, stack_peak: u64, heap_peak: Option<u64>) -> Self {
        let sections = sections(&std::fs::read(elf).unwrap());
        for s in &sections {
            assert!(
                !s.alloc || s.size == 0 || COUNTED.contains(&s.name.as_str()),
                "section {} ({} B) takes memory on the target but is in neither figure",
                s.name,
                s.size
            );
        }
        let size = |name: &str| {
            sections
                .iter()
                .find(|s| s.name == name)
                .map_or(0, |s| s.size)
        };
        Self {
            // .data's initial values are stored in flash too (and copied to RAM at reset).
            flash: size(".vector_table") + size(".text") + size(".rodata") + size(".data"),
            static_ram: size(".data") + size(".bss"),
            stack_peak,
            // The allocator's arena: cortex-m-rt's .uninit, which holds nothing else here.
            heap_arena: size(".uninit"),
            heap_peak,
        }
    }

    fn ram(&self) -> u64 {
        self.static_ram + self.stack_peak
    }

    fn report(&self, build: &str) {
        eprintln!(
            "firmware ({build}): flash {} B (.vector_table + .text + .rodata + .data); RAM {} B = .data + .bss {} B \
             + stack peak {} B; heap arena {} B{}",
            self.flash,
            self.ram(),
            self.static_ram,
            self.stack_peak,
            self.heap_arena,
            self.heap_peak
                .map(|p| format!(" (peak in use {p} B)"))
                .unwrap_or_default()
        );
    }
}

#[test]
fn frontier_record_and_uplink_on_a_cortex_m4_match_the_host_within_64k_flash_and_16k_ram() {
    let dir = tempfile::tempdir().unwrap();
    let elf = build(&[], dir.path());
    let lines = Qemu::start(&elf, dir.path()).finish();

    let sdk = secret(SDK);
    let mut expected = vec!["build seal".to_string()];
    expected.extend(expected_readings(&sdk));
    let (printed, measured) = measurements(&lines, SEAL_MEASUREMENTS);
    assert_eq!(
        printed,
        expected.as_slice(),
        "the firmware's lines differ from the host's"
    );
    // The first record and uplink are the ones in docs/wire.md (Vectors 1 and 5).
    assert_eq!(expected[2], format!("record {VECTOR1_RECORD}"));
    assert_eq!(
        expected[3],
        format!("uplink 31000000000005{VECTOR1_RECORD}{VECTOR5_TAG}")
    );
    open_printed_uplinks(&lines, &sdk);

    let fp = Footprint::measure(&elf, measured[0], None);
    fp.report("frontier, records, uplinks; no heap");
    assert_eq!(fp.heap_arena, 0, "the build without admission has no heap");
    assert!(
        fp.flash <= FLASH_GOAL,
        "flash {} B is over the {FLASH_GOAL} B goal",
        fp.flash
    );
    assert!(
        fp.ram() <= RAM_GOAL,
        "RAM {} B is over the {RAM_GOAL} B goal",
        fp.ram()
    );
}

#[test]
fn a_cortex_m4_joins_the_hub_on_the_host_and_sends_uplinks_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let elf = build(&["admission"], dir.path());
    let qemu = Qemu::start(&elf, dir.path());

    // The hub's side, driven by the files the firmware writes.
    let (qemu, hello) = qemu.wait_for_file(dir.path(), "hello.bin");
    assert_eq!(hex::encode(&hello), VECTOR4_HELLO);
    let hub = HubAwaitingCode::read_hello(
        &Secret::from_bytes(HUB_STATIC),
        Secret::from_bytes(HUB_EPHEMERAL),
        &hello,
    )
    .expect("the hub reads the device's Hello");
    assert_eq!(hub.device(), DEVICE);
    let (hub, response) = hub.respond(JOIN_CODE).unwrap();
    put(dir.path(), "response", &response);
    let (qemu, finish) = qemu.wait_for_file(dir.path(), "finish.bin");
    assert_eq!(hex::encode(&finish), VECTOR4_FINISH);
    let (admitted, welcome) = hub
        .read_finish(&finish)
        .expect("the hub accepts the device's Finish: the device proved it knew the join code");
    assert_eq!(hex::encode(&welcome), VECTOR4_WELCOME);
    put(dir.path(), "welcome", &welcome);
    let lines = qemu.finish();

    // The hub pins the device's static key and holds the same server–device key as Vector 4.
    let c = RustCrypto;
    assert_eq!(
        admitted.peer_static,
        c.x25519_public(&Secret::from_bytes(DEVICE_STATIC))
    );
    assert_eq!(admitted.session_key, secret(VECTOR4_SDK));
    let mut expected = vec![
        "build admission".to_string(),
        format!(
            "admitted {} {}",
            hex::encode(admitted.handshake_hash),
            hex::encode(c.x25519_public(&Secret::from_bytes(HUB_STATIC)))
        ),
    ];
    expected.extend(expected_readings(&admitted.session_key));
    let (printed, measured) = measurements(&lines, ADMISSION_MEASUREMENTS);
    assert_eq!(
        printed,
        expected.as_slice(),
        "the firmware's lines differ from the host's"
    );
    open_printed_uplinks(&lines, &admitted.session_key);

    let [heap_peak, heap_arena, stack_peak] = measured[..] else {
        unreachable!("three measurements")
    };
    let fp = Footprint::measure(&elf, stack_peak, Some(heap_peak));
    fp.report("with admission: Noise XXpsk3 through snow");
    assert_eq!(
        heap_arena, fp.heap_arena,
        "the arena the firmware reports is not its .uninit section"
    );
    assert!(heap_peak > 0 && heap_peak <= fp.heap_arena);
}

#[test]
fn a_hub_holding_another_join_code_refuses_the_cortex_m4s_finish() {
    let dir = tempfile::tempdir().unwrap();
    let elf = build(&["admission"], dir.path());
    let qemu = Qemu::start(&elf, dir.path());
    let (qemu, hello) = qemu.wait_for_file(dir.path(), "hello.bin");
    assert_eq!(hex::encode(&hello), VECTOR4_HELLO);
    let hub = HubAwaitingCode::read_hello(
        &Secret::from_bytes(HUB_STATIC),
        Secret::from_bytes(HUB_EPHEMERAL),
        &hello,
    )
    .unwrap();
    // Response does not depend on the code, so the device answers; its Finish is keyed by the code it holds.
    let (hub, response) = hub.respond(b"fedcba9876543210").unwrap();
    put(dir.path(), "response", &response);
    let (qemu, finish) = qemu.wait_for_file(dir.path(), "finish.bin");
    qemu.kill();
    // The very Finish a hub with the right code accepts (Vector 4's), not some other bytes a hub would refuse anyway.
    assert_eq!(hex::encode(&finish), VECTOR4_FINISH);
    assert_eq!(
        hub.read_finish(&finish).map(|_| ()),
        Err(custos_proto::Error::Handshake),
        "a hub with the wrong code must refuse the device's Finish"
    );
}
