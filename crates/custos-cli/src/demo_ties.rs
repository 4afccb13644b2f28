//! The demo's third act: device-to-device keys (docs/wire.md §12). Two devices get a session key through the hub
//! in each mode — key translation and key distribution, direct and indirect — and by Noise KK between
//! themselves, with the hub vouching only for their static keys; they confirm it and exchange a message. The hub
//! then tries to read that message with everything it stored, and fails; a revoked device is refused a key, and
//! a key to it is refused too. Each claim is checked as it is printed.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use custos_client::TlsTrust;
use custos_device::Factory;
use custos_device::agent::{Agent, AgentError};
use custos_device::ties::{Mode, vouched_static};
use custos_proto::ties::{self, Link, NodeKeys, Refusal, SessionKey};
use custos_proto::{DeviceId, RustCrypto, Secret};
use custos_store::{AnyStore, PendingAdmission, Store};
use rand_core::OsRng;

/// What the act needs from the demo.
pub(crate) struct Stage<'a> {
    pub url: &'a str,
    pub trust: &'a TlsTrust,
    pub store: &'a AnyStore,
    pub hub_dir: &'a Path,
    pub work: &'a Path,
    pub first: &'a mut Agent,
    pub second: &'a mut Agent,
}

/// What the act measured, for the summary.
pub(crate) struct Acted {
    /// Modes run, each with its total bytes on the wire (request, deliveries, both confirmations).
    pub modes: Vec<(&'static str, usize)>,
}

fn now() -> Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs())
}

/// Confirms the key both ways and sends one message; returns the message, the bytes of the confirmations and the
/// requester's confirmation (to replay under the next key).
fn confirm_and_send(
    mine: SessionKey,
    theirs: SessionKey,
    me: DeviceId,
    peer: DeviceId,
    text: &[u8],
    previous: Option<&[u8]>,
) -> Result<(Vec<u8>, usize, Vec<u8>)> {
    let c = RustCrypto;
    let t = now()?;
    let mut a: Link = mine.link(me)?;
    let mut b: Link = theirs.link(peer)?;
    let hello = a.confirm_to(&c, peer, t)?;
    let answer = b
        .accept_confirmation(&c, me, &hello, t)?
        .context("the peer did not answer the confirmation")?;
    ensure!(
        a.accept_confirmation(&c, peer, &answer, t)?.is_none() && a.is_confirmed(peer),
        "the requester did not accept the peer's confirmation"
    );
    // A confirmation sent back to its sender (a reflection), or one replayed from an earlier key, fails. (The same
    // one again under this key only gets the same answer again: a lost answer is answered anew.)
    ensure!(
        a.accept_confirmation(&c, peer, &hello, t).is_err(),
        "a reflected confirmation was accepted"
    );
    if let Some(old) = previous {
        ensure!(
            b.accept_confirmation(&c, me, old, t).is_err(),
            "a confirmation replayed from another key was accepted"
        );
    }
    let mut out = vec![0u8; text.len() + ties::DATA_OVERHEAD];
    let n = a.seal(&c, text, &mut out, t)?;
    out.truncate(n);
    let mut copy = out.clone();
    ensure!(
        b.open(&c, me, &mut copy, t)? == text,
        "the peer read something else"
    );
    let mut again = out.clone();
    ensure!(
        b.open(&c, me, &mut again, t).is_err(),
        "a replayed message was accepted"
    );
    Ok((out, hello.len() + answer.len(), hello.to_vec()))
}

/// The hub's attempt at a node-to-node message: every package it still holds, opened with the keys of the device
/// it is for (which the hub can derive), gives a session key to try. Returns how many keys it tried.
async fn hub_attempt(
    store: &AnyStore,
    requester: DeviceId,
    kids: &[[u8; 8]],
    msg: &[u8],
) -> Result<usize> {
    let c = RustCrypto;
    let mut tried = 0;
    for kid in kids {
        let Some(record) = store.session_key(requester, *kid).await? else {
            continue;
        };
        for p in &record.peers {
            let Some(package) = &p.package else { continue };
            let Some(d) = store.device(p.peer).await? else {
                continue;
            };
            let keys = NodeKeys::derive(&c, &Secret::from_bytes(d.session_key))?;
            if let Ok(key) = ties::open_package(&c, p.peer, &keys, package, now()?) {
                tried += 1;
                let mut m = msg.to_vec();
                if key
                    .link(p.peer)?
                    .open(&c, requester, &mut m, now()?)
                    .is_ok()
                {
                    bail!("the hub opened a node-to-node message");
                }
            }
        }
    }
    Ok(tried)
}

pub(crate) async fn act(stage: Stage<'_>, say: &impl Fn(&str, String)) -> Result<Acted> {
    let (n1, n2) = (stage.first.device(), stage.second.device());
    let mut a = stage.first.key_node()?;
    let mut b = stage.second.key_node()?;
    let life = Duration::from_secs(3600);
    let mut modes = Vec::new();
    let mut kids = Vec::new();
    let mut messages = Vec::new();
    let mut previous: Option<Vec<u8>> = None;
    for mode in Mode::ALL {
        let issued = a.request(mode, &[n2], life, now()?).await?;
        let kid = issued.key.kid();
        let direct = matches!(mode, Mode::KtcDirect | Mode::KdcDirect);
        let (theirs, delivered) = if direct {
            let mut got = b.fetch(Duration::from_secs(5), now()?).await?;
            ensure!(got.len() == 1, "{} keys delivered, not 1", got.len());
            // One delivery with one other holder: type, kid, expiry, holder, seed, tag.
            (got.remove(0), 1 + 8 + 4 + 8 + ties::SEED_LEN + 16)
        } else {
            let (to, package) = issued.forward.first().context("no package to forward")?;
            ensure!(*to == n2, "a package for another device");
            // Forwarded twice (a radio retry, or a replay): the second is refused.
            let key = b.accept(package, now()?).await?;
            ensure!(
                b.accept(package, now()?).await.is_err(),
                "a forwarded package was taken twice"
            );
            (key, package.len())
        };
        let holders = a.holders(&kid, Duration::from_secs(5)).await?;
        ensure!(holders == [n2], "the hub's notices name {holders:?}");
        let request = if matches!(mode, Mode::KtcDirect | Mode::KtcIndirect) {
            53
        } else {
            37
        };
        let grant = if matches!(mode, Mode::KdcDirect | Mode::KdcIndirect) {
            53
        } else {
            0
        };
        let (msg, confirmations, hello) = confirm_and_send(
            issued.key,
            theirs,
            n1,
            n2,
            b"unlock door 2 for 30 s",
            previous.as_deref(),
        )?;
        previous = Some(hello);
        // Indirect: the delivery travels twice, hub to requester and requester to peer.
        let hops = if direct { 1 } else { 2 };
        let bytes = request + grant + hops * delivered + confirmations;
        say(
            "devices",
            format!(
                "{}: {n1} and {n2} hold key {}, confirmed both ways (reflected, or replayed from the last key: refused); {bytes} bytes; the hub's notice says {n2} has it",
                mode.name(),
                hex::encode(kid)
            ),
        );
        modes.push((mode.name(), bytes));
        kids.push(kid);
        messages.push(msg);
    }

    // Noise KK: the hub vouches for the static keys in its signed list; the key never passes through it.
    stage.first.refresh_device_list().await?;
    stage.second.refresh_device_list().await?;
    let list_a = stage.first.device_list()?.context("no device list")?;
    let list_b = stage.second.device_list()?.context("no device list")?;
    let s2 =
        vouched_static(&list_a, n2).context("the list vouches for no static key of the peer")?;
    let s1 = vouched_static(&list_b, n1)
        .context("the list vouches for no static key of the requester")?;
    let (init, m1) = a.kk_start(n2, &s2, life, now()?)?;
    let (theirs, m2) = b.kk_respond(n1, &s1, &m1, now()?)?;
    let mine = init.finish(&m2)?;
    let (kk_msg, confirmations, _) = confirm_and_send(
        mine,
        theirs,
        n1,
        n2,
        b"unlock door 2 for 30 s",
        previous.as_deref(),
    )?;
    let kk_bytes = m1.len() + m2.len() + confirmations;
    say(
        "devices",
        format!(
            "noise-kk: {n1} and {n2} agree on a key between themselves ({kk_bytes} bytes); the hub only vouched for their static keys in its signed list"
        ),
    );
    modes.push(("noise-kk", kk_bytes));

    // The hub tries to read the messages with everything it stored.
    messages.push(kk_msg);
    let mut tried = 0;
    for m in &messages {
        tried += hub_attempt(stage.store, n1, &kids, m).await?;
    }
    let mut open_packages = 0;
    for kid in &kids {
        if let Some(r) = stage.store.session_key(n1, *kid).await? {
            open_packages += r.peers.iter().filter(|p| p.package.is_some()).count();
        }
    }
    ensure!(
        open_packages == 0,
        "the hub still holds {open_packages} packages"
    );
    say(
        "hub",
        format!(
            "tries to read the {} messages with everything it stored: {} key records (ids, peers, expiry), {open_packages} packages left after the receipts ({tried} keys to try), nothing at all of the Noise KK key: it cannot read them",
            messages.len(),
            kids.len()
        ),
    );

    // A third device joins, is revoked, and is refused a key; a key to it is refused too.
    let dir = stage.work.join("device-revoked");
    let made = Factory::make(&mut OsRng);
    made.write_state(&dir)?;
    let t = i64::try_from(now()?)?;
    stage
        .store
        .put_admission(&PendingAdmission {
            device: made.device,
            join_code: made.join_code,
            created_at: t,
            expires_at: t + 600,
        })
        .await?;
    let mut third = Agent::open(&dir)?;
    third.set_hub_trust(stage.trust.clone())?;
    third.join(stage.url, t).await?;
    let mut c = third.key_node()?;
    // Before revocation it may ask.
    c.request(Mode::KdcIndirect, &[n1], life, now()?).await?;
    let (store, keys) = custos_hub::serve::open(stage.hub_dir, None).await?;
    store.revoke(made.device, t).await?;
    let list = custos_hub::Hub::new(store.clone(), keys)
        .publish_device_list()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.close().await;
    match c.request(Mode::KtcDirect, &[n1], life, now()?).await {
        Err(AgentError::Refused { status: 403, .. }) => {}
        other => bail!("a revoked device asked for a key and got {other:?}"),
    }
    match a
        .request(Mode::KtcDirect, &[made.device], life, now()?)
        .await
    {
        Err(AgentError::KeyRefused(Refusal::PeerNotAuthorized)) => {}
        other => bail!("a key to a revoked device got {other:?}"),
    }
    ensure!(
        list.dead.iter().any(|(r, ..)| *r == made.device),
        "the signed list does not name the revoked device's key as dead"
    );
    say(
        "hub",
        format!(
            "revokes {}: it is refused a key (403), a key to it is refused with a reason {n1} authenticates, and list version {} names its key as dead",
            made.device, list.version
        ),
    );
    Ok(Acted { modes })
}
