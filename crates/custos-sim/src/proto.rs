//! The procedures the simulator runs, as each node plays them: the real `custos-proto` state machines, with only
//! the radio taken out. Node 0 is the Central Entity (the hub); nodes 1.. are devices.
//!
//! - **Join**: a device runs admission (Noise XXpsk3 keyed by its join code) with the CE; the CE then signs a new
//!   device list and pushes it to every device, the new one included.
//! - **Key distribution** (KTC direct): N1 draws a key and sends the request to the CE; the CE checks both nodes
//!   against its list and delivers the key to N2; N2 sends a receipt to the CE, which tells N1 (the notice); N1 and
//!   N2 then confirm the key to each other, node to node.

use std::collections::BTreeMap;

use custos_proto::admission::{
    self, DeviceAwaitingResponse, DeviceAwaitingWelcome, HubAwaitingCode, HubAwaitingFinish,
    JOIN_CODE_LEN,
};
use custos_proto::cose::DeviceList;
use custos_proto::ties::{self, Link, NodeKeys, Request, Seed};
use custos_proto::{Crypto, DeviceId, Error, RustCrypto, Secret};

use crate::rng::Rng;

/// The Unix time at which every simulation starts (the nodes' clocks agree; the simulator adds its own time).
pub(crate) const EPOCH: u64 = 1_800_000_000;
/// The lifetime N1 asks for its key.
const KEY_LIFETIME: u32 = 3600;

/// The destination of a message for every device at once (the CE's group, one transmission).
pub(crate) const ALL: usize = usize::MAX;

/// A message one node hands to the link layer for another, or for [`ALL`].
pub(crate) struct Out {
    pub to: usize,
    pub msg: Vec<u8>,
}

fn out(to: usize, msg: impl Into<Vec<u8>>) -> Out {
    Out {
        to,
        msg: msg.into(),
    }
}

/// Which procedure a run plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Procedure {
    /// A device joins: admission, then the new device list to every device.
    Join,
    /// N1 gets a key with N2 through the CE (KTC direct), with the receipt, the notice and key confirmation.
    KeyDistribution,
}

/// A node's part in a procedure.
pub(crate) trait Actor {
    /// What the node sends first, at the start of the run (most nodes wait).
    fn start(&mut self, rng: &mut Rng, now: u64) -> Result<Vec<Out>, Error>;
    /// A complete message from node `from`.
    fn on_message(
        &mut self,
        rng: &mut Rng,
        now: u64,
        from: usize,
        msg: &[u8],
    ) -> Result<Vec<Out>, Error>;
    /// Whether this node has everything the procedure gives it.
    fn done(&self) -> bool;
}

fn device_id(i: usize) -> DeviceId {
    let mut id = [0xd0, 0, 0, 0, 0, 0, 0, 0];
    id[7] = i as u8;
    DeviceId(id)
}

fn secret(rng: &mut Rng) -> Secret {
    Secret::from_bytes(rng.bytes())
}

/// What the CE and a device already share when the run starts.
struct Enrolled {
    sdk: Secret,
    static_key: Secret,
}

/// The Central Entity.
pub(crate) struct Ce {
    c: RustCrypto,
    static_key: Secret,
    signing: Secret,
    list_version: i64,
    /// Devices on the list, by node index: server–device key wrapping keys and pinned static keys.
    admitted: BTreeMap<usize, (NodeKeys, [u8; 32])>,
    join_codes: BTreeMap<usize, [u8; JOIN_CODE_LEN]>,
    awaiting_finish: BTreeMap<usize, HubAwaitingFinish>,
    /// Requests whose delivery is out, by (requester, kid): who still owes a receipt.
    open_requests: BTreeMap<(usize, [u8; 8]), Vec<usize>>,
    nodes: usize,
    finished: bool,
}

impl Ce {
    fn device_list(&self, now: u64) -> Result<Vec<u8>, Error> {
        let list = DeviceList {
            version: self.list_version,
            issued_at: now as i64,
            devices: self.admitted.keys().map(|&i| device_id(i)).collect(),
            statics: self.admitted.values().map(|(_, s)| *s).collect(),
            dead: Vec::new(),
        };
        list.sign(|m| self.c.ed25519_sign(&self.signing, m))
    }

    /// The wrapping keys of a device on the list: the CE answers no one else.
    fn keys_of(&self, i: usize) -> Result<&NodeKeys, Error> {
        self.admitted
            .get(&i)
            .map(|(keys, _)| keys)
            .ok_or(Error::InvalidValue("a device not on the list"))
    }

    fn index_of(&self, d: DeviceId) -> Option<usize> {
        (1..=self.nodes).find(|&i| device_id(i) == d)
    }
}

impl Actor for Ce {
    fn start(&mut self, _: &mut Rng, _: u64) -> Result<Vec<Out>, Error> {
        Ok(Vec::new())
    }

    fn on_message(
        &mut self,
        rng: &mut Rng,
        now: u64,
        from: usize,
        msg: &[u8],
    ) -> Result<Vec<Out>, Error> {
        let c = &self.c;
        match msg.first().copied() {
            Some(admission::HELLO) => {
                let hub = HubAwaitingCode::read_hello(&self.static_key, secret(rng), msg)?;
                if hub.device() != device_id(from) {
                    return Err(Error::InvalidValue("a Hello names another device"));
                }
                let code = self
                    .join_codes
                    .get(&from)
                    .ok_or(Error::InvalidValue("no join code for this device"))?;
                let (next, response) = hub.respond(code)?;
                self.awaiting_finish.insert(from, next);
                Ok(vec![out(from, response)])
            }
            Some(admission::FINISH) => {
                let hub = self
                    .awaiting_finish
                    .remove(&from)
                    .ok_or(Error::InvalidValue("a Finish with no admission under way"))?;
                let (admitted, welcome) = hub.read_finish(msg)?;
                let keys = NodeKeys::derive(c, &admitted.session_key)?;
                self.admitted.insert(from, (keys, admitted.peer_static));
                self.join_codes.remove(&from);
                self.list_version += 1;
                let list = self.device_list(now)?;
                // The new list goes to every device in one group transmission, the new one included.
                let outs = vec![out(from, welcome), out(ALL, list)];
                self.finished = true;
                Ok(outs)
            }
            Some(ties::KTC_DIRECT) => {
                let keys = self.keys_of(from)?;
                let (req, seed) = Request::open(c, device_id(from), keys, msg)?;
                let seed = seed.ok_or(Error::InvalidValue("a KTC request with no key"))?;
                req.check_expiry(Node::now_secs(now))
                    .map_err(|_| Error::InvalidValue("a key request with a bad expiry"))?;
                let mut outs = Vec::new();
                let mut owed = Vec::new();
                for &peer in req.peers.as_slice() {
                    let i = self
                        .index_of(peer)
                        .ok_or(Error::InvalidValue("a key for an unknown device"))?;
                    let package = req.package(c, peer, self.keys_of(i)?, &seed)?;
                    outs.push(out(i, package.as_bytes()));
                    owed.push(i);
                }
                self.open_requests.insert((from, req.kid), owed);
                Ok(outs)
            }
            Some(ties::RECEIPT) => {
                let keys = self.keys_of(from)?;
                let (requester, kid) = ties::open_receipt(c, device_id(from), keys, msg)?;
                let r = self
                    .index_of(requester)
                    .ok_or(Error::InvalidValue("a receipt for an unknown requester"))?;
                let owed = self
                    .open_requests
                    .get_mut(&(r, kid))
                    .ok_or(Error::InvalidValue("a receipt for no request"))?;
                owed.retain(|&i| i != from);
                if owed.is_empty() {
                    self.open_requests.remove(&(r, kid));
                    self.finished = true;
                }
                let requester_keys = self.keys_of(r)?;
                let notice =
                    ties::seal_notice(c, requester, requester_keys, device_id(from), &kid)?;
                Ok(vec![out(r, notice)])
            }
            _ => Err(Error::InvalidValue(
                "the CE got a message it does not expect",
            )),
        }
    }

    fn done(&self) -> bool {
        self.finished
    }
}

enum Joining {
    Idle,
    // The handshake state is large; boxed so a node that is not joining does not carry it.
    AwaitingResponse(Box<DeviceAwaitingResponse>),
    AwaitingWelcome(DeviceAwaitingWelcome),
    Admitted,
}

/// A device.
pub(crate) struct Node {
    c: RustCrypto,
    me: usize,
    hub_signing: [u8; 32],
    hub_static: [u8; 32],
    static_key: Secret,
    keys: Option<NodeKeys>,
    join_code: Option<[u8; JOIN_CODE_LEN]>,
    joining: Joining,
    /// The newest device list this node holds, and the version it must reach to be done.
    list: Option<DeviceList>,
    wants_list: Option<i64>,
    /// Key distribution: the peer this node asks a key for (N1), its key and link.
    ask_for: Option<usize>,
    link: Option<Link>,
    confirmed: bool,
    /// What this node expects to be done: true when it has no part that needs finishing.
    role_done: fn(&Node) -> bool,
}

impl Node {
    fn now_secs(now: u64) -> u64 {
        EPOCH + now / 1_000_000
    }
}

impl Actor for Node {
    fn start(&mut self, rng: &mut Rng, now: u64) -> Result<Vec<Out>, Error> {
        if let Some(code) = self.join_code {
            let (next, hello) = DeviceAwaitingResponse::start(
                device_id(self.me),
                &self.static_key,
                &code,
                secret(rng),
                Some(self.hub_static),
            )?;
            self.joining = Joining::AwaitingResponse(Box::new(next));
            return Ok(vec![out(0, hello)]);
        }
        if let (Some(peer), Some(keys)) = (self.ask_for, &self.keys) {
            let t = Self::now_secs(now);
            let kid = rng.bytes::<8>();
            let expires = (t as u32).saturating_add(KEY_LIFETIME);
            let req = Request::new(
                ties::KTC_DIRECT,
                device_id(self.me),
                &[device_id(peer)],
                kid,
                expires,
            )?;
            let seed = Seed::from_bytes(rng.bytes());
            let msg = req.seal(&self.c, keys, Some(&seed))?;
            self.link = Some(req.session_key(&self.c, &seed)?.link(device_id(self.me))?);
            return Ok(vec![out(0, msg.as_bytes())]);
        }
        Ok(Vec::new())
    }

    fn on_message(
        &mut self,
        _: &mut Rng,
        now: u64,
        from: usize,
        msg: &[u8],
    ) -> Result<Vec<Out>, Error> {
        let c = &self.c;
        let t = Self::now_secs(now);
        let me = device_id(self.me);
        match (from, msg.first().copied()) {
            (0, Some(admission::RESPONSE)) => {
                let Joining::AwaitingResponse(dev) =
                    core::mem::replace(&mut self.joining, Joining::Idle)
                else {
                    return Err(Error::InvalidValue("a Response with no join under way"));
                };
                let (next, finish) = dev.read_response(msg)?;
                self.joining = Joining::AwaitingWelcome(next);
                Ok(vec![out(0, finish)])
            }
            (0, Some(admission::WELCOME)) => {
                let Joining::AwaitingWelcome(dev) =
                    core::mem::replace(&mut self.joining, Joining::Idle)
                else {
                    return Err(Error::InvalidValue("a Welcome with no join under way"));
                };
                let admitted = dev.read_welcome(msg)?;
                self.keys = Some(NodeKeys::derive(c, &admitted.session_key)?);
                self.joining = Joining::Admitted;
                Ok(Vec::new())
            }
            (0, Some(ties::DELIVERY)) => {
                let keys = self
                    .keys
                    .as_ref()
                    .ok_or(Error::InvalidValue("not admitted"))?;
                let key = ties::open_package(c, me, keys, msg, t)?;
                let receipt = ties::seal_receipt(c, me, keys, key.requester(), &key.kid())?;
                self.link = Some(key.link(me)?);
                Ok(vec![out(0, receipt)])
            }
            (0, Some(ties::NOTICE)) => {
                let keys = self
                    .keys
                    .as_ref()
                    .ok_or(Error::InvalidValue("not admitted"))?;
                let (peer, kid) = ties::open_notice(c, me, keys, msg)?;
                let link = self
                    .link
                    .as_ref()
                    .ok_or(Error::InvalidValue("no key asked for"))?;
                let p = self
                    .ask_for
                    .ok_or(Error::InvalidValue("no key asked for"))?;
                if peer != device_id(p) || kid != link.key().kid() {
                    return Err(Error::InvalidValue("a notice for another key"));
                }
                Ok(vec![out(p, link.confirm_to(c, peer, t)?)])
            }
            (0, _) => {
                let list = DeviceList::verify(c, msg, &self.hub_signing)?;
                if self
                    .list
                    .as_ref()
                    .is_some_and(|l| l.version >= list.version)
                {
                    return Err(Error::InvalidValue("an old device list"));
                }
                self.list = Some(list);
                Ok(Vec::new())
            }
            (peer, Some(ties::CONFIRM_REQUESTER | ties::CONFIRM_PEER)) => {
                let link = self.link.as_mut().ok_or(Error::InvalidValue("no key"))?;
                let answer = link.accept_confirmation(c, device_id(peer), msg, t)?;
                self.confirmed = link.is_confirmed(device_id(peer));
                Ok(answer.map(|a| out(peer, a)).into_iter().collect())
            }
            _ => Err(Error::InvalidValue(
                "a node got a message it does not expect",
            )),
        }
    }

    fn done(&self) -> bool {
        (self.role_done)(self)
    }
}

/// The actors of one run: index 0 is the CE, then `nodes` devices. `rng` draws every key and nonce.
pub(crate) fn actors(
    procedure: Procedure,
    nodes: usize,
    rng: &mut Rng,
) -> Result<Vec<Box<dyn Actor>>, Error> {
    let c = RustCrypto;
    let ce_static = secret(rng);
    let signing = secret(rng);
    let hub_static = c.x25519_public(&ce_static);
    let hub_signing = c.ed25519_public(&signing);
    // Join: the last device is new; key distribution: all are on the list, and node 1 asks for a key with node 2.
    let joiner = (procedure == Procedure::Join).then_some(nodes);
    let enrolled: Vec<Enrolled> = (0..nodes)
        .map(|_| Enrolled {
            sdk: secret(rng),
            static_key: secret(rng),
        })
        .collect();
    let mut ce = Ce {
        c,
        static_key: ce_static,
        signing,
        list_version: 1,
        admitted: BTreeMap::new(),
        join_codes: BTreeMap::new(),
        awaiting_finish: BTreeMap::new(),
        open_requests: BTreeMap::new(),
        nodes,
        finished: false,
    };
    let mut out: Vec<Box<dyn Actor>> = Vec::new();
    let mut devices = Vec::new();
    for (k, e) in enrolled.into_iter().enumerate() {
        let i = k + 1;
        let is_new = joiner == Some(i);
        let (join_code, keys) = if is_new {
            let code = rng.bytes::<JOIN_CODE_LEN>();
            ce.join_codes.insert(i, code);
            (Some(code), None)
        } else {
            // Admitted before the run: both sides hold the server–device key admission gave them.
            let ce_keys = NodeKeys::derive(&c, &e.sdk)?;
            ce.admitted
                .insert(i, (ce_keys, c.x25519_public(&e.static_key)));
            (None, Some(NodeKeys::derive(&c, &e.sdk)?))
        };
        let role_done: fn(&Node) -> bool = match procedure {
            Procedure::Join if is_new => |n| {
                matches!(n.joining, Joining::Admitted)
                    && n.list.as_ref().map(|l| l.version) >= n.wants_list
            },
            Procedure::Join => |n| n.list.as_ref().map(|l| l.version) >= n.wants_list,
            Procedure::KeyDistribution if i == 1 || i == 2 => |n| n.confirmed,
            Procedure::KeyDistribution => |_| true,
        };
        devices.push(Node {
            c,
            me: i,
            hub_signing,
            hub_static,
            static_key: e.static_key,
            keys,
            join_code,
            joining: if is_new {
                Joining::Idle
            } else {
                Joining::Admitted
            },
            list: None,
            wants_list: (procedure == Procedure::Join).then_some(2),
            ask_for: (procedure == Procedure::KeyDistribution && i == 1).then_some(2),
            link: None,
            confirmed: false,
            role_done,
        });
    }
    out.push(Box::new(ce));
    out.extend(devices.into_iter().map(|d| Box::new(d) as Box<dyn Actor>));
    Ok(out)
}
