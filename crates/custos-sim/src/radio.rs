//! The radio: one LoRa channel shared by every node, driven as a discrete-event simulation.
//!
//! - **Half duplex, one channel.** All nodes hear each other (one cell, as in the TIES demonstrator). A node listens
//!   before it talks (LoRa channel activity detection): it starts a frame only when the channel is idle, so frames
//!   never overlap; a node that is transmitting hears nothing.
//! - **Loss.** Each frame is lost at each receiver independently with the configured probability (noise, fading),
//!   drawn from the seeded generator.
//! - **Time on air** from the Semtech formula (`custos_link::airtime`), **duty cycle** per node as ETSI EN 300 220
//!   counts it (`custos_link::duty`), a fixed propagation delay, and a fixed processing time per message a node
//!   handles (its cryptography on a small CPU).
//! - **Busy time** of a node: from the first frame it sends or hears for the procedure to the end of the last one,
//!   duty-cycle waits included, as TIES measured it.

use std::collections::VecDeque;

use custos_link::duty::Rule;
use custos_link::{
    Addr, DutyCycle, Event, GROUP_SLOT_GUARD_US, GroupReceiver, GroupSender, Link, LinkConfig,
    LinkError, MAX_FRAME, SACK_LEN, SpreadingFactor, SubBand, is_group, peek_addrs, time_on_air_us,
};

use crate::proto::{ALL, Actor, Procedure, actors};
use crate::rng::Rng;

/// The largest message the simulated links carry (a device list of a few hundred nodes would need more; these
/// procedures need under 1 KiB).
const MAX_MESSAGE: usize = 2048;
/// A run that has not finished after this long (simulated) has failed.
const GIVE_UP_US: u64 = 6 * 3600 * 1_000_000;

/// One simulated run.
#[derive(Clone, Debug)]
pub struct Config {
    /// What to run.
    pub procedure: Procedure,
    /// The spreading factor of every node (125 kHz, CR 4/5).
    pub sf: SpreadingFactor,
    /// Probability that a frame is lost at a receiver, 0 to 1.
    pub loss: f64,
    /// Every random draw of the run (keys, losses, backoff slots) comes from it.
    pub seed: u64,
    /// Devices besides the CE (TIES: three).
    pub nodes: usize,
    /// The EU868 sub-band every node uses, which sets the duty cycle.
    pub band: SubBand,
    /// How the duty cycle is counted: over ETSI's sliding hour, or with LoRaWAN's silence after every frame.
    pub rule: Rule,
    /// Time a node takes to handle a message before it can answer, µs.
    pub processing_us: u64,
    /// Propagation delay, µs (3.3 µs per km).
    pub propagation_us: u64,
}

/// What one run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    /// Busy time per node, µs (index 0 is the CE); `None` for a node that took no part.
    pub busy_us: Vec<Option<u64>>,
    /// When the last node was done, µs from the start.
    pub total_us: u64,
    /// Frames sent, frames lost to noise, frames lost to collisions, bytes sent (frame headers included).
    pub frames: u64,
    /// Frames lost to noise at their receiver.
    pub lost: u64,
    /// Frames lost because another started at the same time.
    pub collided: u64,
    /// Bytes on air.
    pub bytes: u64,
    /// Time nodes spent waiting for their duty-cycle budget with a frame ready, µs, summed over nodes.
    pub duty_wait_us: u64,
}

/// A run that could not complete.
#[derive(Debug)]
pub enum SimError {
    /// A protocol step failed (a bug: the simulated radio loses frames but never alters them).
    Protocol(usize, custos_proto::Error),
    /// The link layer gave up on a message after its retries.
    LinkGaveUp {
        /// The sending node.
        from: usize,
        /// The node it could not reach (`usize::MAX`: the group of all devices).
        to: usize,
    },
    /// The link layer refused a message (a bug: the simulated messages fit).
    Link(custos_link::LinkError),
    /// Nothing finished within the simulated time limit.
    Timeout,
}

impl core::fmt::Display for SimError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Protocol(n, e) => write!(f, "node {n}: protocol error: {e}"),
            Self::LinkGaveUp { from, to } => {
                write!(
                    f,
                    "the link from node {from} to node {to} gave up a message"
                )
            }
            Self::Link(e) => write!(f, "the link refused a message: {e}"),
            Self::Timeout => write!(
                f,
                "the procedure did not finish in {} h",
                GIVE_UP_US / 3_600_000_000
            ),
        }
    }
}

impl std::error::Error for SimError {}

fn addr(i: usize) -> Addr {
    Addr(i as u8)
}

/// What a node sends and receives through: a link per peer, the CE's group sender, a member's group state.
enum Port<'a> {
    Link(Link<'a>),
    Sender(GroupSender<'a>),
    Member(GroupReceiver<'a>),
}

impl Port<'_> {
    fn next_deadline(&self) -> Option<u64> {
        match self {
            Port::Link(l) => l.next_deadline(),
            Port::Sender(g) => g.next_deadline(),
            Port::Member(m) => m.next_deadline(),
        }
    }

    fn poll_transmit(&mut self, now: u64, out: &mut [u8]) -> Option<usize> {
        match self {
            Port::Link(l) => l.poll_transmit(now, out),
            Port::Sender(g) => g.poll_transmit(now, out),
            Port::Member(m) => m.poll_transmit(now, out),
        }
    }

    fn handle_frame(&mut self, now: u64, frame: &[u8]) -> Result<(), LinkError> {
        match self {
            Port::Link(l) => l.handle_frame(now, frame),
            Port::Sender(g) => g.handle_frame(now, frame),
            Port::Member(m) => m.handle_frame(now, frame),
        }
    }

    fn poll_event(&mut self) -> Option<Event> {
        match self {
            Port::Link(l) => l.poll_event(),
            Port::Sender(g) => g.poll_event(),
            Port::Member(m) => m.poll_event(),
        }
    }

    /// The message completed, taken out of the receive buffer (a sender receives nothing).
    fn take_received(&mut self) -> Vec<u8> {
        let msg = match self {
            Port::Link(l) => l.received().map(<[u8]>::to_vec),
            Port::Member(m) => m.received().map(<[u8]>::to_vec),
            Port::Sender(_) => None,
        };
        match self {
            Port::Link(l) => l.release_received(),
            Port::Member(m) => m.release_received(),
            Port::Sender(_) => {}
        }
        msg.unwrap_or_default()
    }

    fn is_busy(&self) -> bool {
        match self {
            Port::Link(l) => l.is_busy(),
            Port::Sender(g) => g.is_busy(),
            Port::Member(_) => true,
        }
    }

    fn send(&mut self, now: u64, msg: &[u8]) -> Result<(), LinkError> {
        match self {
            Port::Link(l) => l.send(now, msg),
            Port::Sender(g) => g.send(now, msg),
            Port::Member(_) => Err(LinkError::WrongAddress),
        }
    }
}

/// A node's radio. Ports `0..n` are its links (by peer; none to itself), port `n` the group: the CE's sender,
/// or a device's member state for the CE's group.
struct Radio<'a> {
    duty: DutyCycle,
    /// The time on air of the longest frame: the duty cycle must allow it before a port picks the frame.
    max_toa: u64,
    ports: Vec<Option<Port<'a>>>,
    /// Messages waiting for their port, with the time they are ready (after processing).
    queues: Vec<VecDeque<(u64, Vec<u8>)>>,
    /// The earliest time a message was handed to a port and is not on the air yet.
    fed_at: Option<u64>,
    /// After deferring to a busy channel, the node starts at a random slot after it goes idle (listen before
    /// talk with random backoff), so that the nodes that waited do not all start at once.
    backoff_until: Option<u64>,
    /// Round robin over ports, so one busy peer does not starve the others.
    next_port: usize,
    first: Option<u64>,
    last: u64,
    /// Since when a frame has been waiting for the duty-cycle budget.
    waiting_since: Option<u64>,
    duty_wait_us: u64,
}

impl Radio<'_> {
    fn touch(&mut self, t: u64) {
        self.first.get_or_insert(t);
        self.last = self.last.max(t);
    }

    /// Hands queued messages that are ready to idle ports.
    fn feed(&mut self, now: u64) -> Result<(), SimError> {
        for (p, q) in self.queues.iter_mut().enumerate() {
            let Some(port) = self.ports[p].as_mut() else {
                continue;
            };
            while let Some(&(ready, _)) = q.front() {
                if ready > now || port.is_busy() {
                    break;
                }
                if let Some((_, msg)) = q.pop_front() {
                    port.send(now, &msg).map_err(SimError::Link)?;
                    self.fed_at = Some(self.fed_at.map_or(ready, |t| t.min(ready)));
                }
            }
        }
        Ok(())
    }

    /// When this node first had a frame to send (a port's deadline, or a message handed over), if it has one now.
    fn due_since(&self, now: u64) -> Option<u64> {
        let t = self
            .ports
            .iter()
            .flatten()
            .filter_map(Port::next_deadline)
            .min()?;
        (t <= now).then(|| self.fed_at.map_or(t, |f| f.min(t)))
    }

    /// The earliest time this node wants to act without hearing anything.
    fn next_wakeup(&self, now: u64) -> Option<u64> {
        let ports = self.ports.iter().flatten().filter_map(Port::next_deadline);
        let queued = self
            .queues
            .iter()
            .filter_map(|q| q.front().map(|(t, _)| *t));
        let t = ports.chain(queued).min()?;
        // A frame that is due but held back by the duty cycle waits for the budget, or for its backoff slot.
        let t = t.max(now.saturating_add(self.duty.wait_for_us(now, self.max_toa)));
        Some(self.backoff_until.map_or(t, |b| t.max(b)))
    }
}

/// The link settings for a run: the EU868 payload limit as MTU; an acknowledgement timeout of a full frame, an
/// acknowledgement, the receiver's processing time and its longest backoff, plus 50 ms (the nodes always listen,
/// so there is no LoRaWAN receive window to wait for); 16 retries without progress before giving up, so that a
/// run at 30 % loss completes; backoff doubling up to 8 timeouts; group answer slots of an acknowledgement's
/// time on air plus the link's guard.
pub fn link_config(cfg: &Config) -> LinkConfig {
    let sf = cfg.sf;
    let ack_timeout_us = time_on_air_us(sf, sf.max_payload())
        + time_on_air_us(sf, SACK_LEN)
        + cfg.processing_us
        + (BACKOFF_SLOTS + 1) * slot_us(sf)
        + 50_000;
    LinkConfig {
        mtu: sf.max_payload(),
        ack_timeout_us,
        max_retries: 16,
        max_backoff_us: ack_timeout_us * 2,
        jitter_us: ack_timeout_us / 4,
        group_slot_us: time_on_air_us(sf, SACK_LEN) + GROUP_SLOT_GUARD_US,
    }
}

/// Backoff slots after a busy channel: a node draws one of this many (after a first slot it always waits).
const BACKOFF_SLOTS: u64 = 8;

/// One backoff slot: a channel activity detection takes about two symbols.
fn slot_us(sf: SpreadingFactor) -> u64 {
    2 * sf.symbol_us()
}

/// Runs one procedure over the simulated radio.
pub fn run(cfg: &Config) -> Result<Outcome, SimError> {
    let n = cfg.nodes + 1;
    let mut rng = Rng::new(cfg.seed);
    let mut actors: Vec<Box<dyn Actor>> =
        actors(cfg.procedure, cfg.nodes, &mut rng).map_err(|e| SimError::Protocol(0, e))?;
    let link_cfg = link_config(cfg);
    let group = n; // the port index of the group
    // The CE's group is every device, in order: device i answers in slot i − 1 (given to it at admission).
    let members: Vec<Addr> = (1..n).map(addr).collect();

    let mut buffers: Vec<Vec<u8>> = (0..2 * n * (n + 1))
        .map(|_| vec![0u8; MAX_MESSAGE])
        .collect();
    let mut bufs = buffers.iter_mut();
    let mut radios: Vec<Radio<'_>> = Vec::with_capacity(n);
    for me in 0..n {
        let mut ports = Vec::with_capacity(n + 1);
        for peer in 0..n {
            ports.push(match (peer != me, bufs.next(), bufs.next()) {
                (true, Some(tx), Some(rx)) => Some(Port::Link(Link::new(
                    link_cfg,
                    addr(me),
                    addr(peer),
                    tx,
                    rx,
                ))),
                _ => None,
            });
        }
        let buf = bufs
            .next()
            .ok_or(SimError::Link(LinkError::MessageTooLarge))?;
        ports.push(Some(if me == 0 {
            Port::Sender(
                GroupSender::new(link_cfg, addr(0), &members, buf).map_err(SimError::Link)?,
            )
        } else {
            Port::Member(
                GroupReceiver::new(link_cfg, addr(me), addr(0), (me - 1) as u8, buf)
                    .map_err(SimError::Link)?,
            )
        }));
        radios.push(Radio {
            duty: DutyCycle::with_rule(cfg.band, cfg.rule),
            max_toa: time_on_air_us(cfg.sf, link_cfg.mtu),
            ports,
            queues: (0..=n).map(|_| VecDeque::new()).collect(),
            fed_at: None,
            backoff_until: None,
            next_port: 0,
            first: None,
            last: 0,
            waiting_since: None,
            duty_wait_us: 0,
        });
    }
    let port_of = |to: usize| if to == ALL { group } else { to };

    let mut out = Outcome {
        busy_us: vec![None; n],
        total_us: 0,
        frames: 0,
        lost: 0,
        collided: 0,
        bytes: 0,
        duty_wait_us: 0,
    };
    let mut now = 0u64;
    for (i, a) in actors.iter_mut().enumerate() {
        let outs = a
            .start(&mut rng, now)
            .map_err(|e| SimError::Protocol(i, e))?;
        if !outs.is_empty() {
            radios[i].touch(now);
        }
        for o in outs {
            radios[i].queues[port_of(o.to)].push_back((now, o.msg));
        }
    }
    let slot = slot_us(cfg.sf);
    let mut done = false;
    loop {
        if now > GIVE_UP_US {
            return Err(SimError::Timeout);
        }
        for r in radios.iter_mut() {
            r.feed(now)?;
        }
        // The channel is idle. Every node with a frame due, budget left and its backoff slot reached starts one;
        // a node whose frame came due while the channel was busy first draws a slot. Two starts at once collide.
        let mut on_air: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, r) in radios.iter_mut().enumerate() {
            let Some(since) = r.due_since(now) else {
                continue;
            };
            if r.duty.wait_for_us(now, r.max_toa) > 0 {
                r.waiting_since.get_or_insert(now);
                continue;
            }
            if let Some(w) = r.waiting_since.take() {
                r.duty_wait_us += now - w;
            }
            // At least one slot: a frame due the moment the channel went idle (an answer to the frame just heard)
            // goes first, as 802.11's short interframe space lets acknowledgements go before new traffic.
            if since < now && r.backoff_until.is_none() {
                r.backoff_until = Some(now + (1 + rng.below(BACKOFF_SLOTS)) * slot);
            }
            if r.backoff_until.is_some_and(|b| b > now) {
                continue;
            }
            let count = r.ports.len();
            for j in 0..count {
                let p = (r.next_port + j) % count;
                let Some(port) = r.ports[p].as_mut() else {
                    continue;
                };
                let mut frame = vec![0u8; MAX_FRAME];
                if let Some(len) = port.poll_transmit(now, &mut frame) {
                    frame.truncate(len);
                    r.next_port = (p + 1) % count;
                    on_air.push((i, frame));
                    r.backoff_until = None;
                    r.fed_at = None;
                    break;
                }
            }
        }
        if on_air.is_empty() {
            match radios.iter().filter_map(|r| r.next_wakeup(now)).min() {
                Some(t) => now = t.max(now + 1),
                None => break,
            }
        } else {
            let collision = on_air.len() > 1;
            let mut busy_until = now;
            for (from, frame) in &on_air {
                let toa = time_on_air_us(cfg.sf, frame.len());
                let end = now + toa;
                let arrive = end + cfg.propagation_us;
                busy_until = busy_until.max(arrive);
                radios[*from].duty.record(now, toa);
                radios[*from].touch(now);
                radios[*from].touch(end);
                out.frames += 1;
                out.bytes += frame.len() as u64;
                let Some((dst, src)) = peek_addrs(frame) else {
                    continue;
                };
                // Who the frame is for, and which of their ports takes it (see custos_link::is_group).
                let targets: Vec<(usize, usize)> = if dst == Addr::BROADCAST {
                    (0..n).filter(|&t| t != *from).map(|t| (t, group)).collect()
                } else if is_group(frame) {
                    vec![(usize::from(dst.0), group)]
                } else {
                    vec![(usize::from(dst.0), usize::from(src.0))]
                };
                for (to, p) in targets {
                    // The receiver listens all the same; noise or a collision may leave it nothing.
                    let Some(r) = radios.get_mut(to).filter(|_| to != *from) else {
                        continue;
                    };
                    r.touch(now + cfg.propagation_us);
                    r.touch(arrive);
                    if collision {
                        out.collided += 1;
                    } else if rng.chance(cfg.loss) {
                        out.lost += 1;
                    } else if let Some(port) = r.ports.get_mut(p).and_then(Option::as_mut) {
                        // A frame the port refuses (a stale duplicate, say) is dropped, as a radio would.
                        let _ = port.handle_frame(arrive, frame);
                    }
                }
            }
            now = busy_until;
        }
        // Events: messages complete at a node go to its actor, whose answers wait out its processing time.
        for i in 0..n {
            for p in 0..=n {
                while let Some(port) = radios[i].ports[p].as_mut() {
                    let Some(ev) = port.poll_event() else {
                        break;
                    };
                    let peer = if p == group { 0 } else { p };
                    match ev {
                        Event::Received => {
                            let msg = port.take_received();
                            let outs = actors[i]
                                .on_message(&mut rng, now, peer, &msg)
                                .map_err(|e| SimError::Protocol(i, e))?;
                            for o in outs {
                                radios[i].queues[port_of(o.to)]
                                    .push_back((now + cfg.processing_us, o.msg));
                            }
                        }
                        Event::Delivered => {}
                        Event::Failed => {
                            let to = if p == group { ALL } else { p };
                            return Err(SimError::LinkGaveUp { from: i, to });
                        }
                    }
                }
            }
        }
        if !done && actors.iter().all(|a| a.done()) {
            done = true;
        }
    }
    if !done {
        return Err(SimError::Timeout);
    }
    for (i, r) in radios.iter().enumerate() {
        out.busy_us[i] = r.first.map(|f| r.last - f);
        out.total_us = out.total_us.max(r.last);
        out.duty_wait_us += r.duty_wait_us;
    }
    Ok(out)
}
