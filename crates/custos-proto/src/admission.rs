//! Admission: a new device joins the hub with the one-time *join code* printed on its packaging.
//!
//! The TIES join, improved: instead of deriving keys from the code, device and hub run the Noise handshake
//! `Noise_XXpsk3_25519_AESGCM_SHA256` (prologue `custos/v1/admission`) with the code as pre-shared key. Both
//! static keys are exchanged and pinned, the session key has forward secrecy, and neither side completes unless
//! the other knew the code: the hub verifies it when it reads `Finish`, the device when it reads `Welcome`.
//!
//! ```text
//! device (initiator)                                   hub (responder)
//! Hello    01 ‖ e ‖ device id ‖ tag            (57 B) →  looks up the device's pending code
//! Response 02 ‖ e, ee, s, es ‖ tag             (97 B) ←
//! Finish   03 ‖ s, se, psk ‖ tag               (65 B) →  wrong code or altered message: Error::Handshake
//! Welcome  04 ‖ tag                            (17 B) ←  key confirmation under the new session
//!                                             236 B in all
//! ```
//!
//! In a PSK handshake Noise mixes `e` into the key, so even `Hello`'s payload (the device id, which the hub needs
//! to find the code) is encrypted and authenticated — under a key anyone can derive, so it hides nothing, but a
//! changed device id breaks the handshake. The hub's signing key for device lists is not part of the handshake:
//! the hub sends it later under the session key.
//!
//! Result ([`Admitted`]): the server–device key `SDK = HKDF-Extract(salt = h, ikm = k1 ‖ k2)` (Noise handshake
//! hash and split keys) and the peer's static key. The PSK is `HKDF-Expand(HKDF-Extract("custos/v1/join-psk",
//! code), device id, 32)`. Each step consumes its state; ephemeral keys are passed in, so the caller owns
//! randomness. The hub decides single use and expiry (it keeps the codes); this module only runs the handshake.

use alloc::vec::Vec;

use snow::{Builder, HandshakeState};
use subtle::ConstantTimeEq;

use crate::{Crypto, DeviceId, Error, RustCrypto, Secret, Suite};

/// The Noise protocol name.
pub const PATTERN: &str = "Noise_XXpsk3_25519_AESGCM_SHA256";
/// The Noise prologue: binds the handshake to this protocol and version.
pub const PROLOGUE: &[u8] = b"custos/v1/admission";
/// Message type of `Hello` (device → hub).
pub const HELLO: u8 = 0x01;
/// Message type of `Response` (hub → device).
pub const RESPONSE: u8 = 0x02;
/// Message type of `Finish` (device → hub).
pub const FINISH: u8 = 0x03;
/// Message type of `Welcome` (hub → device).
pub const WELCOME: u8 = 0x04;
/// Length of a join code, bytes.
pub const JOIN_CODE_LEN: usize = 16;

const PSK_SALT: &[u8] = b"custos/v1/join-psk";
const WELCOME_LABEL: &[u8] = b"custos/v1/welcome";
const HELLO_LEN: usize = 1 + 32 + 8 + 16;
const RESPONSE_LEN: usize = 1 + 32 + 48 + 16;
const FINISH_LEN: usize = 1 + 48 + 16;
const WELCOME_LEN: usize = 1 + 16;
/// The four messages together, bytes.
pub const HANDSHAKE_BYTES: usize = HELLO_LEN + RESPONSE_LEN + FINISH_LEN + WELCOME_LEN;

/// What a completed admission yields on either side.
#[derive(Debug)]
pub struct Admitted {
    /// The device that joined.
    pub device: DeviceId,
    /// The peer's Noise static public key: the hub's, on the device; the device's, on the hub. Pin it.
    pub peer_static: [u8; 32],
    /// The server–device key.
    pub session_key: Secret,
    /// The Noise handshake hash: a public transcript digest both sides share.
    pub handshake_hash: [u8; 32],
}

fn builder(ephemeral: Secret) -> Result<Builder<'static>, Error> {
    crate::noise::builder(PATTERN, ephemeral)
}

fn psk(device: DeviceId, code: &[u8; JOIN_CODE_LEN]) -> Result<Secret, Error> {
    crate::noise::code_psk(PSK_SALT, device, code)
}

/// The session key and the `Welcome` AEAD key of a finished handshake.
fn keys(hs: &mut HandshakeState) -> Result<(Secret, Secret, [u8; 32]), Error> {
    let c = RustCrypto;
    let (session, hash) = crate::noise::split_secret(hs)?;
    let mut welcome = Secret::zero();
    c.hkdf_expand(session.expose(), &[WELCOME_LABEL], welcome.expose_mut())?;
    Ok((session, welcome, hash))
}

use crate::noise::expect;

fn peer_static(hs: &HandshakeState) -> Result<[u8; 32], Error> {
    hs.get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or(Error::Handshake)
}

fn noise_write(
    hs: &mut HandshakeState,
    kind: u8,
    payload: &[u8],
    len: usize,
) -> Result<Vec<u8>, Error> {
    let mut out = alloc::vec![0u8; len];
    out[0] = kind;
    let n = hs
        .write_message(payload, &mut out[1..])
        .map_err(|_| Error::Handshake)?;
    if n + 1 != len {
        return Err(Error::Crypto);
    }
    Ok(out)
}

fn welcome_nonce() -> [u8; 12] {
    [0; 12]
}

/// `Welcome` authenticates its type and the whole transcript.
fn welcome_aad(handshake_hash: &[u8; 32]) -> [u8; 33] {
    let mut aad = [WELCOME; 33];
    aad[1..].copy_from_slice(handshake_hash);
    aad
}

/// The device has sent `Hello` and waits for the hub's `Response`.
pub struct DeviceAwaitingResponse {
    hs: HandshakeState,
    device: DeviceId,
    pinned_hub: Option<[u8; 32]>,
}

/// The device has sent `Finish` and waits for `Welcome`, which proves the hub knew the code.
pub struct DeviceAwaitingWelcome {
    admitted: Admitted,
    welcome_key: Secret,
}

impl DeviceAwaitingResponse {
    /// Starts a join: `static_key` is the device's X25519 identity key, `ephemeral` 32 fresh random bytes.
    /// With `pinned_hub`, the device refuses any hub whose static key differs.
    pub fn start(
        device: DeviceId,
        static_key: &Secret,
        join_code: &[u8; JOIN_CODE_LEN],
        ephemeral: Secret,
        pinned_hub: Option<[u8; 32]>,
    ) -> Result<(Self, Vec<u8>), Error> {
        let psk = psk(device, join_code)?;
        let mut hs = builder(ephemeral)?
            .prologue(PROLOGUE)
            .and_then(|b| b.local_private_key(static_key.expose()))
            .and_then(|b| b.psk(3, psk.expose()))
            .and_then(Builder::build_initiator)
            .map_err(|_| Error::Crypto)?;
        let hello = noise_write(&mut hs, HELLO, &device.0, HELLO_LEN)?;
        Ok((
            Self {
                hs,
                device,
                pinned_hub,
            },
            hello,
        ))
    }

    /// Reads `Response` and answers with `Finish`.
    pub fn read_response(mut self, msg: &[u8]) -> Result<(DeviceAwaitingWelcome, Vec<u8>), Error> {
        let body = expect(msg, RESPONSE, RESPONSE_LEN)?;
        let mut payload = [0u8; RESPONSE_LEN];
        let n = self
            .hs
            .read_message(body, &mut payload)
            .map_err(|_| Error::Handshake)?;
        if n != 0 {
            return Err(Error::Handshake);
        }
        let hub = peer_static(&self.hs)?;
        if let Some(pinned) = self.pinned_hub
            && !bool::from(pinned.ct_eq(&hub))
        {
            return Err(Error::Handshake);
        }
        let finish = noise_write(&mut self.hs, FINISH, &[], FINISH_LEN)?;
        let (session_key, welcome_key, handshake_hash) = keys(&mut self.hs)?;
        let admitted = Admitted {
            device: self.device,
            peer_static: hub,
            session_key,
            handshake_hash,
        };
        Ok((
            DeviceAwaitingWelcome {
                admitted,
                welcome_key,
            },
            finish,
        ))
    }
}

impl DeviceAwaitingWelcome {
    /// Reads `Welcome`: only a hub that knew the join code can have sent it.
    pub fn read_welcome(self, msg: &[u8]) -> Result<Admitted, Error> {
        let body = expect(msg, WELCOME, WELCOME_LEN)?;
        let tag: [u8; 16] = body.try_into().map_err(|_| Error::Truncated)?;
        let c = RustCrypto;
        let key = c.aead_key(Suite::AES256GCM, &self.welcome_key)?;
        c.aead_open(
            &key,
            &welcome_nonce(),
            &welcome_aad(&self.admitted.handshake_hash),
            &mut [],
            &tag,
        )
        .map_err(|_| Error::Handshake)?;
        Ok(self.admitted)
    }
}

/// The hub has read `Hello`: it knows which device claims to join and must look up its code.
pub struct HubAwaitingCode {
    hs: HandshakeState,
    device: DeviceId,
}

/// The hub has sent `Response` and waits for `Finish`.
pub struct HubAwaitingFinish {
    hs: HandshakeState,
    device: DeviceId,
}

impl HubAwaitingCode {
    /// Reads a device's `Hello`. `static_key` is the hub's X25519 identity key, `ephemeral` 32 fresh random bytes.
    pub fn read_hello(static_key: &Secret, ephemeral: Secret, msg: &[u8]) -> Result<Self, Error> {
        let body = expect(msg, HELLO, HELLO_LEN)?;
        let mut hs = builder(ephemeral)?
            .prologue(PROLOGUE)
            .and_then(|b| b.local_private_key(static_key.expose()))
            .and_then(Builder::build_responder)
            .map_err(|_| Error::Crypto)?;
        let mut payload = [0u8; HELLO_LEN];
        let n = hs
            .read_message(body, &mut payload)
            .map_err(|_| Error::Handshake)?;
        let device = DeviceId(
            payload[..n]
                .try_into()
                .map_err(|_| Error::InvalidValue("Hello must carry an 8-byte device id"))?,
        );
        Ok(Self { hs, device })
    }

    /// The device that claims to join.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// Answers with `Response`, keyed by the join code the hub holds for this device.
    pub fn respond(
        mut self,
        join_code: &[u8; JOIN_CODE_LEN],
    ) -> Result<(HubAwaitingFinish, Vec<u8>), Error> {
        let psk = psk(self.device, join_code)?;
        self.hs
            .set_psk(3, psk.expose())
            .map_err(|_| Error::Crypto)?;
        let response = noise_write(&mut self.hs, RESPONSE, &[], RESPONSE_LEN)?;
        Ok((
            HubAwaitingFinish {
                hs: self.hs,
                device: self.device,
            },
            response,
        ))
    }
}

impl HubAwaitingFinish {
    /// Reads `Finish`; on success the device proved it knew the code. Returns the result and `Welcome`.
    pub fn read_finish(mut self, msg: &[u8]) -> Result<(Admitted, Vec<u8>), Error> {
        let body = expect(msg, FINISH, FINISH_LEN)?;
        let mut payload = [0u8; FINISH_LEN];
        let n = self
            .hs
            .read_message(body, &mut payload)
            .map_err(|_| Error::Handshake)?;
        if n != 0 || !self.hs.is_handshake_finished() {
            return Err(Error::Handshake);
        }
        let device_static = peer_static(&self.hs)?;
        let (session_key, welcome_key, handshake_hash) = keys(&mut self.hs)?;
        let c = RustCrypto;
        let key = c.aead_key(Suite::AES256GCM, &welcome_key)?;
        let tag = c.aead_seal(
            &key,
            &welcome_nonce(),
            &welcome_aad(&handshake_hash),
            &mut [],
        )?;
        let mut welcome = alloc::vec![WELCOME];
        welcome.extend_from_slice(&tag);
        Ok((
            Admitted {
                device: self.device,
                peer_static: device_static,
                session_key,
                handshake_hash,
            },
            welcome,
        ))
    }
}
