//! The Custos core for the web dashboard: [`custos_proto`] compiled to WebAssembly, behind a small API that the
//! page's JavaScript calls (docs/web.md).
//!
//! Every key operation of the page happens here, in the browser: the pairing handshake keyed by the owner code,
//! the provisioning of the device's frontier from the browser's own master secret, commands and their
//! authenticated answers, lists of authorized senders, claims, and the opening of records. The JavaScript side
//! does the I/O (the hub's HTTP API) and keeps the keys in IndexedDB, wrapped by a non-extractable WebCrypto key;
//! it never needs to understand a byte of what it carries.
//!
//! The functions are plain Rust ([`api`]), tested natively; the `#[wasm_bindgen]` layer below only converts
//! errors into JavaScript exceptions.

pub mod api;

use wasm_bindgen::prelude::*;

fn js(e: api::WebError) -> JsError {
    JsError::new(&e.to_string())
}

/// The version of this module, for the page's footer and for bug reports.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// `n` random bytes from the browser's CSPRNG (`crypto.getRandomValues`), at most 1 024.
#[wasm_bindgen]
pub fn random_bytes(n: usize) -> Result<Vec<u8>, JsError> {
    api::random_bytes(n).map_err(js)
}

/// A device id in its canonical form (`00-11-22-33-44-55-66-77`), or an exception saying why the text is not one.
#[wasm_bindgen]
pub fn device_id(text: &str) -> Result<String, JsError> {
    api::parse_device(text).map(|d| d.to_string()).map_err(js)
}

/// Checks an owner code as printed on a device's label (32 hex digits, dashes and spaces allowed).
#[wasm_bindgen]
pub fn check_owner_code(text: &str) -> Result<(), JsError> {
    api::parse_owner_code(text).map(drop).map_err(js)
}

/// The browser's side of pairing with a device (docs/wire.md §9), keyed by the owner code from the device's label,
/// and the provisioning of the device's DPK epoch from the browser's master secret.
#[wasm_bindgen]
pub struct Pairing(api::Pairing);

#[wasm_bindgen]
impl Pairing {
    /// Prepares a pairing with `device` for DPK epoch `epoch` over `[from, until)` (Unix seconds) under `schedule`
    /// (e.g. `month/week/day`); the device will keep only the frontier from `now`.
    #[wasm_bindgen(constructor)]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        device: &str,
        owner_code: &str,
        master: &[u8],
        epoch: u16,
        schedule: &str,
        from: f64,
        until: f64,
        now: f64,
    ) -> Result<Pairing, JsError> {
        api::Pairing::new(
            device, owner_code, master, epoch, schedule, from, until, now,
        )
        .map(Pairing)
        .map_err(js)
    }

    /// `PairInit`, for the hub's relay (`POST /v1/pairing/{device}/to-device`).
    pub fn init(&self) -> Result<Vec<u8>, JsError> {
        self.0.init().map_err(js)
    }

    /// Reads a message from the relay's `to-keeper` mailbox: if it is the device's `PairAccept`, returns the sealed
    /// `Provision` to relay; anything else (junk, an answer to another attempt) is an exception, and the pairing
    /// goes on.
    pub fn accept(&mut self, msg: &[u8]) -> Result<Vec<u8>, JsError> {
        self.0.accept(msg).map_err(js)
    }

    /// Reads a message from the relay after the `Provision`: `true` when it is the device's acknowledgement.
    pub fn ack(&mut self, msg: &[u8]) -> bool {
        self.0.ack(msg)
    }

    /// The user–device key, once the device acknowledged (an exception before).
    pub fn user_device_key(&self) -> Result<Vec<u8>, JsError> {
        self.0.user_device_key().map_err(js)
    }

    /// How many node secrets the device was given (its frontier).
    pub fn secrets(&self) -> usize {
        self.0.secrets()
    }
}

/// A device's answer to a command, verified under the sender's answer key.
#[wasm_bindgen(getter_with_clone)]
pub struct Answer {
    /// `done`, `replayed`, `expired`, `failed` or `bad_value`.
    pub status: String,
    /// The actuator's state after the command.
    pub state: String,
}

/// Seals a command (docs/wire.md §11): `op` is `set` (with `value`) or `get`. `key` is the user–device key when
/// `owner` (sender 0), else the member key of `sender`. `counter` must rise with every command of this sender;
/// `expires` is Unix seconds.
#[wasm_bindgen]
#[allow(clippy::too_many_arguments)]
pub fn seal_command(
    key: &[u8],
    owner: bool,
    device: &str,
    sender: u32,
    counter: f64,
    expires: f64,
    op: &str,
    value: &str,
) -> Result<Vec<u8>, JsError> {
    api::seal_command(key, owner, device, sender, counter, expires, op, value).map_err(js)
}

/// Opens the device's answer to the command `(sender, counter)`: an exception unless the device made it.
#[wasm_bindgen]
pub fn open_answer(
    key: &[u8],
    owner: bool,
    device: &str,
    sender: u32,
    counter: f64,
    msg: &[u8],
) -> Result<Answer, JsError> {
    let (status, state) = api::open_answer(key, owner, device, sender, counter, msg).map_err(js)?;
    Ok(Answer { status, state })
}

/// Seals the hub's claim token (32 hex digits) under the user–device key: the device proves it opened it.
#[wasm_bindgen]
pub fn seal_claim(udk: &[u8], device: &str, token: &str) -> Result<Vec<u8>, JsError> {
    api::seal_claim(udk, device, token).map_err(js)
}

/// Seals version `version` of the device's list of authorized senders: `senders[i]` holds the 32-byte key
/// `keys[32·i .. 32·i + 32]`, with the right to command.
#[wasm_bindgen]
pub fn seal_list(
    udk: &[u8],
    device: &str,
    version: f64,
    senders: Vec<u32>,
    keys: &[u8],
) -> Result<Vec<u8>, JsError> {
    api::seal_list(udk, device, version, &senders, keys).map_err(js)
}

/// Opens the device's acknowledgement of a list: the version it now holds.
#[wasm_bindgen]
pub fn open_list_ack(udk: &[u8], device: &str, msg: &[u8]) -> Result<f64, JsError> {
    api::open_list_ack(udk, device, msg).map_err(js)
}

/// The share code that hands a member key to another person (`custos-share-1:<device>:<sender>:<key>`), the same
/// as `custos device share` prints.
#[wasm_bindgen]
pub fn share_code(device: &str, sender: u32, key: &[u8]) -> Result<String, JsError> {
    api::share_code(device, sender, key).map_err(js)
}

/// What a share code holds.
#[wasm_bindgen(getter_with_clone)]
pub struct Share {
    /// The device, canonical.
    pub device: String,
    /// The sender id the device knows this member by.
    pub sender: u32,
    /// The member key.
    pub key: Vec<u8>,
}

/// Reads a share code.
#[wasm_bindgen]
pub fn parse_share_code(code: &str) -> Result<Share, JsError> {
    let (device, sender, key) = api::parse_share_code(code).map_err(js)?;
    Ok(Share {
        device: device.to_string(),
        sender,
        key,
    })
}

/// Opens a device's records of one DPK epoch with the browser's master secret.
#[wasm_bindgen]
pub struct Reader(api::Reader);

#[wasm_bindgen]
impl Reader {
    /// A reader of `device`'s epoch `epoch` (`[from, until)` under `schedule`, as provisioned).
    #[wasm_bindgen(constructor)]
    pub fn new(
        master: &[u8],
        device: &str,
        epoch: u16,
        schedule: &str,
        from: f64,
        until: f64,
    ) -> Result<Reader, JsError> {
        api::Reader::new(master, device, epoch, schedule, from, until)
            .map(Reader)
            .map_err(js)
    }

    /// The leaf indices `[from_leaf, until_leaf)` whose periods meet `[from, until)`, for the hub's records query;
    /// empty when the range misses the epoch.
    pub fn leaf_range(&self, from: f64, until: f64) -> Result<Vec<u32>, JsError> {
        self.0.leaf_range(from, until).map_err(js)
    }

    /// The first second of a leaf's period.
    pub fn leaf_start(&self, leaf: u32) -> Result<f64, JsError> {
        self.0.leaf_start(leaf).map_err(js)
    }

    /// Opens one sealed record (hex, as the hub serves it); an exception releases nothing.
    pub fn open(&mut self, record_hex: &str) -> Result<String, JsError> {
        self.0.open(record_hex).map_err(js)
    }
}
