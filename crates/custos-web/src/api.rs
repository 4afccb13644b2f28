//! The dashboard's key operations as plain Rust: what the `#[wasm_bindgen]` layer exports, tested natively.
//!
//! Times cross the JavaScript boundary as `f64` Unix seconds (or milliseconds for counters): every value used here
//! is an integer far below 2⁵³, and each is checked to be one.

use core::fmt;

use custos_proto::control::{self, CommandHeader, Op, OwnerKeys, SenderKeys, Status};
use custos_proto::pairing::{KeeperAwaitingAccept, KeeperPaired, OWNER_CODE_LEN, Provision};
use custos_proto::{
    DeviceId, Epoch, MasterSecret, NodeSecret, Opener, RustCrypto, Schedule, Secret, Span, Suite,
    TreeSpec, UnixTime,
};
use zeroize::Zeroizing;

/// The prefix of a share code, the same as the keeper's (`custos device share`).
pub const SHARE_CODE_PREFIX: &str = "custos-share-1";

/// What went wrong, in words the page can show.
#[derive(Debug)]
pub enum WebError {
    /// The input is not what was expected.
    Input(String),
    /// The core refused it (a forged answer, a malformed message, …).
    Proto(custos_proto::Error),
}

impl fmt::Display for WebError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Input(s) => f.write_str(s),
            Self::Proto(e) => write!(f, "{e}"),
        }
    }
}

impl From<custos_proto::Error> for WebError {
    fn from(e: custos_proto::Error) -> Self {
        Self::Proto(e)
    }
}

fn input(why: impl Into<String>) -> WebError {
    WebError::Input(why.into())
}

/// `n` bytes from the platform's CSPRNG (in a browser, `crypto.getRandomValues`).
pub fn random_bytes(n: usize) -> Result<Vec<u8>, WebError> {
    if n > 1024 {
        return Err(input("at most 1024 random bytes at a time"));
    }
    let mut out = vec![0u8; n];
    getrandom::getrandom(&mut out).map_err(|e| input(format!("no randomness: {e}")))?;
    Ok(out)
}

fn random_array<const N: usize>() -> Result<Zeroizing<[u8; N]>, WebError> {
    let mut out = Zeroizing::new([0u8; N]);
    getrandom::getrandom(out.as_mut()).map_err(|e| input(format!("no randomness: {e}")))?;
    Ok(out)
}

/// A device id from its text form.
pub fn parse_device(text: &str) -> Result<DeviceId, WebError> {
    text.trim().parse().map_err(|_| {
        input(format!(
            "`{}` is not a device id (16 hex digits)",
            text.trim()
        ))
    })
}

/// An owner code from the label: 32 hex digits, with any dashes or spaces.
pub fn parse_owner_code(text: &str) -> Result<Zeroizing<[u8; OWNER_CODE_LEN]>, WebError> {
    let digits: Zeroizing<String> = Zeroizing::new(
        text.chars()
            .filter(|c| !matches!(c, '-' | ' ' | ':'))
            .collect(),
    );
    let mut code = Zeroizing::new([0u8; OWNER_CODE_LEN]);
    hex::decode_to_slice(digits.as_bytes(), code.as_mut())
        .map_err(|_| input("the owner code is 32 hex digits, as printed on the device's label"))?;
    Ok(code)
}

fn secret(bytes: &[u8], what: &str) -> Result<Secret, WebError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| input(format!("{what} must be 32 bytes")))?;
    Ok(Secret::from_bytes(arr))
}

fn whole(x: f64, what: &str) -> Result<u64, WebError> {
    // 2^53: above it an f64 no longer holds every integer.
    if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= 9_007_199_254_740_992.0 {
        Ok(x as u64)
    } else {
        Err(input(format!("{what} must be a whole number, not {x}")))
    }
}

fn time(x: f64, what: &str) -> Result<UnixTime, WebError> {
    Ok(UnixTime::new(whole(x, what)?)?)
}

fn tree(
    device: &str,
    epoch: u16,
    schedule: &str,
    from: f64,
    until: f64,
) -> Result<TreeSpec, WebError> {
    if epoch == 0 {
        return Err(input("DPK epochs are numbered from 1"));
    }
    let schedule: Schedule = schedule
        .parse()
        .map_err(|e| input(format!("schedule `{schedule}`: {e}")))?;
    let span = Span::new(time(from, "from")?, time(until, "until")?)?;
    Ok(TreeSpec::new(
        parse_device(device)?,
        Epoch(epoch),
        schedule,
        span,
    )?)
}

enum Stage {
    Started,
    Paired(KeeperPaired),
    Acked(Secret),
    Spent,
}

/// The browser's side of a pairing: it rebuilds its first handshake state from the same ephemeral key for each
/// relayed message, so junk from anyone (the relay takes posts from anyone) never ends the attempt.
pub struct Pairing {
    device: DeviceId,
    owner_code: Zeroizing<[u8; OWNER_CODE_LEN]>,
    ephemeral: Zeroizing<[u8; 32]>,
    provision: Provision,
    stage: Stage,
}

impl Pairing {
    /// See the `#[wasm_bindgen]` constructor.
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
    ) -> Result<Self, WebError> {
        let spec = tree(device, epoch, schedule, from, until)?;
        let owner_code = parse_owner_code(owner_code)?;
        let master = MasterSecret::new(secret(master, "the master secret")?);
        let root = spec.root(&RustCrypto, &master)?;
        let provision = Provision::frontier(
            &RustCrypto,
            spec,
            Suite::AES256GCM,
            core::slice::from_ref(&root),
            time(now, "now")?,
        )?;
        let ephemeral = random_array::<32>()?;
        // Fails now, not at the first message, if the handshake cannot start.
        KeeperAwaitingAccept::start(spec.device(), &owner_code, Secret::from_bytes(*ephemeral))?;
        Ok(Self {
            device: spec.device(),
            owner_code,
            ephemeral,
            provision,
            stage: Stage::Started,
        })
    }

    fn attempt(&self) -> Result<(KeeperAwaitingAccept, Vec<u8>), WebError> {
        Ok(KeeperAwaitingAccept::start(
            self.device,
            &self.owner_code,
            Secret::from_bytes(*self.ephemeral),
        )?)
    }

    /// `PairInit`.
    pub fn init(&self) -> Result<Vec<u8>, WebError> {
        Ok(self.attempt()?.1)
    }

    /// A relayed message: the sealed `Provision` if it is the device's `PairAccept`.
    pub fn accept(&mut self, msg: &[u8]) -> Result<Vec<u8>, WebError> {
        match self.stage {
            Stage::Started => {}
            _ => return Err(input("this pairing already has the device's answer")),
        }
        let mut paired = self.attempt()?.0.read_accept(msg)?;
        let sealed = paired.seal_provision(&self.provision)?;
        self.stage = Stage::Paired(paired);
        Ok(sealed)
    }

    /// A relayed message after the `Provision`: whether it is the device's acknowledgement of it.
    pub fn ack(&mut self, msg: &[u8]) -> bool {
        let Stage::Paired(p) = &mut self.stage else {
            return false;
        };
        if p.open_ack(msg).is_err() {
            return false;
        }
        let udk = p.user_device_key().clone();
        self.stage = Stage::Acked(udk);
        true
    }

    /// The user–device key, once acknowledged.
    pub fn user_device_key(&self) -> Result<Vec<u8>, WebError> {
        match &self.stage {
            Stage::Acked(k) => Ok(k.expose().to_vec()),
            _ => Err(input("the device has not acknowledged its keys yet")),
        }
    }

    /// The number of node secrets provisioned.
    pub fn secrets(&self) -> usize {
        self.provision.nodes().len()
    }

    /// Forgets the handshake (the page calls this on a timeout).
    pub fn abandon(&mut self) {
        self.stage = Stage::Spent;
    }
}

fn sender_keys(key: &[u8], owner: bool) -> Result<SenderKeys, WebError> {
    let key = secret(key, "the sender key")?;
    Ok(if owner {
        OwnerKeys::from_udk(&RustCrypto, &key)?.owner().clone()
    } else {
        SenderKeys::derive(&RustCrypto, &key)?
    })
}

/// See [`crate::seal_command`].
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
) -> Result<Vec<u8>, WebError> {
    if owner != (sender == 0) {
        return Err(input("sender 0 is the owner, and only the owner"));
    }
    let op = match op {
        "set" => Op::Set,
        "get" => Op::Get,
        _ => return Err(input(format!("`{op}` is not an operation: set or get"))),
    };
    let header = CommandHeader {
        suite: Suite::AES256GCM,
        sender,
        counter: whole(counter, "the counter")?,
        expires: u32::try_from(whole(expires, "the expiry")?)
            .map_err(|_| input("the expiry is past 2106"))?,
    };
    Ok(control::seal_command(
        &RustCrypto,
        &sender_keys(key, owner)?,
        parse_device(device)?,
        header,
        op,
        value.as_bytes(),
    )?)
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Done => "done",
        Status::Replayed => "replayed",
        Status::Expired => "expired",
        Status::Failed => "failed",
        Status::BadValue => "bad_value",
    }
}

/// See [`crate::open_answer`]: the status name and the state.
pub fn open_answer(
    key: &[u8],
    owner: bool,
    device: &str,
    sender: u32,
    counter: f64,
    msg: &[u8],
) -> Result<(String, String), WebError> {
    let (status, state) = control::open_answer(
        &RustCrypto,
        &sender_keys(key, owner)?,
        parse_device(device)?,
        sender,
        whole(counter, "the counter")?,
        msg,
    )?;
    Ok((
        status_name(status).to_string(),
        String::from_utf8_lossy(&state).into_owned(),
    ))
}

fn owner_keys(udk: &[u8]) -> Result<OwnerKeys, WebError> {
    Ok(OwnerKeys::from_udk(
        &RustCrypto,
        &secret(udk, "the user–device key")?,
    )?)
}

/// See [`crate::seal_claim`].
pub fn seal_claim(udk: &[u8], device: &str, token: &str) -> Result<Vec<u8>, WebError> {
    let mut t = [0u8; control::TOKEN_LEN];
    hex::decode_to_slice(token.trim(), &mut t)
        .map_err(|_| input("the claim token is 32 hex digits"))?;
    Ok(control::seal_claim(
        &RustCrypto,
        Suite::AES256GCM,
        &owner_keys(udk)?,
        parse_device(device)?,
        *random_array::<12>()?,
        &t,
    )?)
}

/// See [`crate::seal_list`].
pub fn seal_list(
    udk: &[u8],
    device: &str,
    version: f64,
    senders: &[u32],
    keys: &[u8],
) -> Result<Vec<u8>, WebError> {
    if keys.len() != senders.len() * 32 {
        return Err(input("one 32-byte key per sender"));
    }
    let mut members = Vec::with_capacity(senders.len());
    for (s, k) in senders.iter().zip(keys.chunks_exact(32)) {
        members.push(control::Member {
            sender: *s,
            rights: control::RIGHT_CONTROL,
            key: secret(k, "a member key")?,
        });
    }
    members.sort_by_key(|m| m.sender);
    Ok(control::seal_list(
        &RustCrypto,
        Suite::AES256GCM,
        &owner_keys(udk)?,
        parse_device(device)?,
        whole(version, "the list version")?,
        *random_array::<12>()?,
        &members,
    )?)
}

/// See [`crate::open_list_ack`].
pub fn open_list_ack(udk: &[u8], device: &str, msg: &[u8]) -> Result<f64, WebError> {
    let v = control::open_list_ack(&RustCrypto, &owner_keys(udk)?, parse_device(device)?, msg)?;
    // Versions are the keeper's clock in milliseconds or a count: far below 2^53.
    Ok(v as f64)
}

/// See [`crate::share_code`].
pub fn share_code(device: &str, sender: u32, key: &[u8]) -> Result<String, WebError> {
    if sender == 0 {
        return Err(input("sender 0 is the owner"));
    }
    let key = secret(key, "the member key")?;
    Ok(format!(
        "{SHARE_CODE_PREFIX}:{}:{sender}:{}",
        hex::encode(parse_device(device)?.0),
        hex::encode(key.expose())
    ))
}

/// See [`crate::parse_share_code`].
pub fn parse_share_code(code: &str) -> Result<(DeviceId, u32, Vec<u8>), WebError> {
    let bad = || input("not a share code (custos-share-1:DEVICE:SENDER:KEY)");
    let mut parts = code.trim().split(':');
    if parts.next() != Some(SHARE_CODE_PREFIX) {
        return Err(bad());
    }
    let (Some(device), Some(sender), Some(key), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let mut d = [0u8; 8];
    hex::decode_to_slice(device, &mut d).map_err(|_| bad())?;
    let sender: u32 = sender.parse().map_err(|_| bad())?;
    if sender == 0 {
        return Err(bad());
    }
    let mut k = vec![0u8; 32];
    hex::decode_to_slice(key, &mut k).map_err(|_| bad())?;
    Ok((DeviceId(d), sender, k))
}

/// A device's records of one epoch, opened with the DPK from the browser's master secret.
pub struct Reader {
    spec: TreeSpec,
    held: Vec<NodeSecret>,
}

impl Reader {
    /// See the `#[wasm_bindgen]` constructor.
    pub fn new(
        master: &[u8],
        device: &str,
        epoch: u16,
        schedule: &str,
        from: f64,
        until: f64,
    ) -> Result<Self, WebError> {
        let spec = tree(device, epoch, schedule, from, until)?;
        let master = MasterSecret::new(secret(master, "the master secret")?);
        let root = spec.root(&RustCrypto, &master)?;
        Ok(Self {
            spec,
            held: vec![root],
        })
    }

    /// Leaves `[from_leaf, until_leaf)` meeting `[from, until)`; empty (`[]`) when they miss the epoch.
    pub fn leaf_range(&self, from: f64, until: f64) -> Result<Vec<u32>, WebError> {
        let span = self.spec.span();
        let from = time(from, "from")?.max(span.start());
        let until = time(until, "until")?.min(span.end());
        if from >= until {
            return Ok(Vec::new());
        }
        let last = UnixTime::new(until.secs() - 1)?;
        let a = self.spec.leaf_at(from)?;
        let b = self.spec.leaf_at(last)?;
        Ok(vec![a, b.saturating_add(1)])
    }

    /// The first second of `leaf`'s period (clipped to the epoch).
    pub fn leaf_start(&self, leaf: u32) -> Result<f64, WebError> {
        let span = self.spec.node_span(self.spec.leaf_node(leaf))?;
        Ok(span.start().secs() as f64)
    }

    /// Opens a record given in hex.
    pub fn open(&mut self, record_hex: &str) -> Result<String, WebError> {
        let record = hex::decode(record_hex.trim()).map_err(|_| input("a record is hex"))?;
        let mut out = Zeroizing::new(vec![0u8; record.len()]);
        let (_, n) = Opener::new(&RustCrypto, &self.spec, &self.held).open(&record, &mut out)?;
        Ok(String::from_utf8_lossy(&out[..n]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use custos_proto::pairing::DeviceAwaitingProvision;

    const DEVICE: &str = "00-11-22-33-44-55-66-77";
    const CODE: &str = "00112233-44556677-8899aabb-ccddeeff";

    fn jan(d: u32) -> f64 {
        UnixTime::from_date(2026, 1, d).unwrap().secs() as f64
    }

    #[test]
    fn pairing_with_a_device_gives_both_the_key_and_the_device_its_frontier() {
        let master = [9u8; 32];
        let mut p = Pairing::new(
            DEVICE,
            CODE,
            &master,
            1,
            "month/week/day",
            jan(1),
            UnixTime::from_date(2027, 1, 1).unwrap().secs() as f64,
            jan(10),
        )
        .unwrap();
        let init = p.init().unwrap();
        assert_eq!(init, p.init().unwrap(), "every attempt starts the same");
        let code = parse_owner_code(CODE).unwrap();
        let (device, accept) = DeviceAwaitingProvision::read_init(
            parse_device(DEVICE).unwrap(),
            &code,
            Secret::from_bytes([3; 32]),
            &init,
        )
        .unwrap();
        // Junk first: refused, and the pairing goes on.
        assert!(p.accept(&[0x22; 49]).is_err());
        assert!(p.user_device_key().is_err());
        let sealed = p.accept(&accept).unwrap();
        let (paired, provision) = device.open_provision(&sealed).unwrap();
        assert_eq!(provision.nodes().len(), p.secrets());
        assert!(!p.ack(&[0x24; 21]));
        assert!(p.ack(&paired.seal_ack().unwrap()));
        assert_eq!(
            p.user_device_key().unwrap(),
            paired.user_device_key().expose().to_vec()
        );
        // The device's frontier opens what the browser's reader opens.
        let spec = *provision.tree();
        let t = UnixTime::from_date(2026, 1, 12).unwrap();
        let held = spec.holder(provision.nodes(), spec.leaf_node(spec.leaf_at(t).unwrap()));
        let key = spec
            .leaf_key(
                &RustCrypto,
                held.unwrap().unwrap(),
                spec.leaf_at(t).unwrap(),
                Suite::AES256GCM,
            )
            .unwrap();
        let mut record = vec![0u8; 4 + custos_proto::record::OVERHEAD];
        key.seal(&RustCrypto, [0, 0, 0, 0, 0, 0, 0, 7], b"21.5", &mut record)
            .unwrap();
        let mut r = Reader::new(
            &master,
            DEVICE,
            1,
            "month/week/day",
            jan(1),
            UnixTime::from_date(2027, 1, 1).unwrap().secs() as f64,
        )
        .unwrap();
        assert_eq!(r.open(&hex::encode(&record)).unwrap(), "21.5");
        let mut bad = record.clone();
        bad[30] ^= 1;
        assert!(r.open(&hex::encode(&bad)).is_err());
        // Another master opens nothing.
        let mut other = Reader::new(
            &[8u8; 32],
            DEVICE,
            1,
            "month/week/day",
            jan(1),
            UnixTime::from_date(2027, 1, 1).unwrap().secs() as f64,
        )
        .unwrap();
        assert!(other.open(&hex::encode(&record)).is_err());
        let leaves = r.leaf_range(jan(12), jan(13)).unwrap();
        assert_eq!(
            leaves,
            vec![spec.leaf_at(t).unwrap(), spec.leaf_at(t).unwrap() + 1]
        );
        assert_eq!(r.leaf_start(leaves[0]).unwrap(), jan(12));
        assert!(r.leaf_range(0.0, 1.0).unwrap().is_empty());
    }

    #[test]
    fn commands_answers_lists_and_claims_round_trip_with_the_device_side() {
        let udk = [5u8; 32];
        let device = parse_device(DEVICE).unwrap();
        let cmd = seal_command(&udk, true, DEVICE, 0, 1000.0, 2e9, "set", "on").unwrap();
        let owner = OwnerKeys::from_udk(&RustCrypto, &Secret::from_bytes(udk)).unwrap();
        let opened = control::open_command_with(&RustCrypto, owner.owner(), device, &cmd).unwrap();
        let header = CommandHeader::peek(&cmd).unwrap();
        let answer = control::seal_answer(
            &RustCrypto,
            owner.owner(),
            device,
            &header,
            [1; 12],
            Status::Done,
            b"on",
        )
        .unwrap();
        let _ = opened;
        assert_eq!(
            open_answer(&udk, true, DEVICE, 0, 1000.0, &answer).unwrap(),
            ("done".to_string(), "on".to_string())
        );
        // An answer to another counter, or under another key, is refused.
        assert!(open_answer(&udk, true, DEVICE, 0, 1001.0, &answer).is_err());
        assert!(open_answer(&[6; 32], true, DEVICE, 0, 1000.0, &answer).is_err());
        // Bad inputs are errors, not panics.
        assert!(seal_command(&udk, true, DEVICE, 0, 1.5, 2e9, "set", "on").is_err());
        assert!(seal_command(&udk, true, DEVICE, 1, 1.0, 2e9, "set", "on").is_err());
        assert!(seal_command(&udk, true, DEVICE, 0, 1.0, 2e9, "toggle", "").is_err());
        assert!(seal_command(&udk[..31], true, DEVICE, 0, 1.0, 2e9, "set", "on").is_err());
        assert!(seal_command(&udk, true, "nope", 0, 1.0, 2e9, "set", "on").is_err());
        assert!(seal_command(&udk, true, DEVICE, 0, f64::NAN, 2e9, "set", "on").is_err());

        let claim = seal_claim(&udk, DEVICE, "000102030405060708090a0b0c0d0e0f").unwrap();
        assert_eq!(
            control::open_claim(&RustCrypto, &owner, device, &claim).unwrap(),
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        );
        assert!(seal_claim(&udk, DEVICE, "00").is_err());

        let list = seal_list(&udk, DEVICE, 7.0, &[2, 1], &[[2u8; 32], [1u8; 32]].concat()).unwrap();
        let (version, members) = control::open_list(&RustCrypto, &owner, device, &list).unwrap();
        assert_eq!(version, 7);
        assert_eq!(
            members.iter().map(|m| m.sender).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(members[0].key, Secret::from_bytes([1; 32]));
        let ack = control::seal_list_ack(&RustCrypto, Suite::AES256GCM, &owner, device, 7, [4; 12])
            .unwrap();
        assert_eq!(open_list_ack(&udk, DEVICE, &ack).unwrap(), 7.0);
        assert!(open_list_ack(&[1; 32], DEVICE, &ack).is_err());
    }

    #[test]
    fn share_codes_are_the_keepers() {
        let code = share_code(DEVICE, 3, &[0xab; 32]).unwrap();
        assert_eq!(
            code,
            format!("custos-share-1:0011223344556677:3:{}", "ab".repeat(32))
        );
        let (d, s, k) = parse_share_code(&code).unwrap();
        assert_eq!((d.to_string().as_str(), s, k), (DEVICE, 3, vec![0xab; 32]));
        for bad in [
            "",
            "custos-share-1:0011223344556677:0:00",
            "custos-share-2:0011223344556677:3:ab",
            &format!("{code}:x"),
        ] {
            assert!(parse_share_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn owner_codes_take_dashes_and_refuse_the_rest() {
        assert!(parse_owner_code(CODE).is_ok());
        assert!(parse_owner_code("0011").is_err());
        assert!(parse_owner_code(&"g".repeat(32)).is_err());
    }
}
