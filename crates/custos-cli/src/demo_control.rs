//! The demo's second act: owner control. A user registers, claims a device by the token round trip, switches it
//! on and off, shares it with a second account that switches it, revokes that account (the device refuses its
//! next command), reboots the device (state restored, an old command replayed and refused); then the hub plays
//! the attacker — a forged command, a replayed one, an altered one, a faked answer, a claim without the key — and
//! every attempt is refused. Each claim is checked as it is printed.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use custos_client::{HubClient, TlsTrust};
use custos_device::actuator::{Actuator, ActuatorError, parse_switch};
use custos_device::agent::Agent;
use custos_device::control::Controller;
use custos_keeper::{Keeper, KeeperError};
use custos_proto::control::{self, CommandHeader, Op, OwnerKeys, SenderKeys, Status};
use custos_proto::{DeviceId, RustCrypto, Suite};
use custos_store::{AnyStore, NewControl, Store};
use custos_vault::{KdfParams, Unlock};

/// A relay whose position the demo can watch.
#[derive(Clone, Default)]
struct WatchedRelay(Arc<Mutex<Option<bool>>>);

impl WatchedRelay {
    fn position(&self) -> Option<bool> {
        self.0.lock().map(|g| *g).unwrap_or(None)
    }
}

impl Actuator for WatchedRelay {
    fn apply(&mut self, state: &str) -> Result<(), ActuatorError> {
        let on = parse_switch(state)?;
        *self
            .0
            .lock()
            .map_err(|_| ActuatorError::Failed("poisoned".into()))? = Some(on);
        Ok(())
    }
    fn describe(&self) -> String {
        "the demo's relay".into()
    }
}

/// The device's side, running in the background: fetches its control queue and handles what comes.
struct RunningDevice {
    controller: Arc<tokio::sync::Mutex<Controller>>,
    task: tokio::task::JoinHandle<custos_device::agent::AgentError>,
}

impl RunningDevice {
    fn start(agent: &Agent, relay: &WatchedRelay) -> Result<Self> {
        let (controller, channel, udk) = agent.controller(Box::new(relay.clone()))?;
        let udk = udk.context("the device holds no user–device key")?;
        let controller = Arc::new(tokio::sync::Mutex::new(controller));
        let task = tokio::spawn(custos_device::control::serve(
            controller.clone(),
            channel,
            Some(udk),
            Duration::from_secs(1),
            |_, _, _| {},
        ));
        Ok(Self { controller, task })
    }

    async fn refused(&self) -> u64 {
        self.controller.lock().await.refused
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// What the demo needs from the first act.
pub(crate) struct Stage<'a> {
    pub(crate) url: &'a str,
    pub(crate) trust: &'a TlsTrust,
    pub(crate) store: &'a AnyStore,
    pub(crate) work: &'a Path,
    pub(crate) keeper: &'a Keeper,
    pub(crate) agent: &'a Agent,
    pub(crate) device: DeviceId,
}

/// What the act leaves for the final scan: every control key that must never be in the hub's data.
pub(crate) struct Act {
    pub(crate) secrets: Vec<[u8; 32]>,
}

async fn account(hub: &HubClient, name: &str) -> Result<String> {
    let password = format!("{name}'s long passphrase");
    hub.register(name, &password).await?;
    Ok(format!(
        "Bearer {}",
        hub.login(name, &password).await?.token
    ))
}

/// Waits until `check` holds, up to 5 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Result<()> {
    for _ in 0..100 {
        if check() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what} did not happen")
}

const QUICK: Duration = Duration::from_secs(10);
/// How long the demo waits for an answer it expects never to come.
const NO_ANSWER: Duration = Duration::from_secs(2);

pub(crate) async fn act(s: Stage<'_>, say: &dyn Fn(&str, String)) -> Result<Act> {
    let c = RustCrypto;
    let hub = HubClient::new(s.url, QUICK, s.trust)?;
    let dev = s.device;
    let alice = account(&hub, "alice").await?;
    let bob = account(&hub, "bob").await?;
    let mallory = account(&hub, "mallory").await?;
    say("hub", "accounts alice, bob and mallory registered and logged in (Argon2id, sessions as bearer tokens)".into());

    let relay = WatchedRelay::default();
    let device = RunningDevice::start(s.agent, &relay)?;

    // The claim: the hub's token, sealed under the user–device key by alice's keeper, opened by the device.
    s.keeper.claim(s.url, &alice, dev, QUICK).await?;
    let me = hub.whoami(alice.trim_start_matches("Bearer ")).await?;
    ensure!(
        me["owned"]
            .as_array()
            .is_some_and(|o| o.iter().any(|d| d.as_str() == Some(&dev.to_string()))),
        "the claim did not bind {dev} to alice: {me}"
    );
    say(
        "keeper",
        format!(
            "alice claims {dev}: the hub's one-time token went sealed under the user–device key to the device, which proved it opened it; the hub bound the device, learning no key"
        ),
    );

    // On and off, end to end.
    let on = s
        .keeper
        .command(s.url, &alice, dev, Op::Set, "on", QUICK)
        .await?;
    ensure!(
        on.status == Status::Done && on.state == "on",
        "switching on: {on:?}"
    );
    eventually("the relay closing", || relay.position() == Some(true)).await?;
    let captured = s
        .store
        .control_message(dev, on.id)
        .await?
        .context("the hub lost the command")?;
    let off = s
        .keeper
        .command(s.url, &alice, dev, Op::Set, "off", QUICK)
        .await?;
    ensure!(
        off.status == Status::Done && relay.position() == Some(false),
        "switching off: {off:?}"
    );
    say(
        "keeper",
        format!(
            "alice switches it on, then off: the relay follows; each answer authenticates under her key ({} B on the wire for \"on\")",
            captured.posted.message.len()
        ),
    );

    // Shared control: bob gets a member key through a share code, never through the hub.
    hub.account_call(
        reqwest::Method::POST,
        &format!("/v1/devices/{dev}/shares"),
        Some(&serde_json::json!({"account": "bob", "rights": "control"})),
        &alice,
    )
    .await?;
    let code = s
        .keeper
        .share_control(s.url, &alice, dev, "bob", QUICK)
        .await?;
    let bob_keeper = Keeper::init(
        &s.work.join("bob-keeper"),
        Unlock::Passphrase("bob's vault passphrase"),
        KdfParams::new(19 * 1024, 2, 1)?,
    )?;
    let mut bob_keeper = bob_keeper;
    bob_keeper.set_hub_trust(s.trust.clone())?;
    bob_keeper.accept_share(&code)?;
    let by_bob = bob_keeper
        .command(s.url, &bob, dev, Op::Set, "on", QUICK)
        .await?;
    ensure!(
        by_bob.status == Status::Done && relay.position() == Some(true),
        "bob's command: {by_bob:?}"
    );
    say("keeper", "alice shares the device with bob (list v1 acknowledged by the device, share code handed over in person); bob switches it on".into());

    // Revocation: the device refuses bob's next command, whatever the hub does.
    let refused_before = device.refused().await;
    ensure!(
        s.keeper
            .unshare_control(s.url, &alice, dev, "bob", QUICK)
            .await?,
        "bob was no member"
    );
    match bob_keeper
        .command(s.url, &bob, dev, Op::Set, "off", NO_ANSWER)
        .await
    {
        Err(KeeperError::NoAnswer { .. }) => {}
        other => bail!("a revoked member's command got {other:?}"),
    }
    ensure!(
        device.refused().await > refused_before && relay.position() == Some(true),
        "the device acted on a revoked member's command"
    );
    hub.account_call(
        reqwest::Method::DELETE,
        &format!("/v1/devices/{dev}/shares/bob"),
        None,
        &alice,
    )
    .await?;
    say("device", "alice revokes bob (list v2 acknowledged); bob's next command, still relayed by the hub, is refused by the device".into());

    // A reboot: the state comes back from disk, and a replay of the captured "on" is refused.
    device.stop();
    let rebooted = WatchedRelay::default();
    let device = RunningDevice::start(s.agent, &rebooted)?;
    ensure!(
        rebooted.position() == Some(true),
        "the state was not restored after the reboot"
    );
    let replay = NewControl {
        created_at: now_i64()?,
        expires_at: now_i64()? + 60,
        ..captured.posted.clone()
    };
    let id = s.store.push_control(&replay, 64).await?;
    let answer = wait_raw(&hub, dev, id, &alice).await?;
    let owner_keys = OwnerKeys::from_udk(&c, &s.keeper.control()?.user_device_key(dev)?)?;
    let header = CommandHeader::peek(&captured.posted.message)?;
    let (status, _) =
        control::open_answer(&c, owner_keys.owner(), dev, 0, header.counter, &answer)?;
    ensure!(
        status == Status::Replayed,
        "a replayed command after reboot got {status:?}"
    );
    say("device", "reboots: the relay is on again (restored from current.state); the hub replays the captured \"on\": refused as a replay, and the device says so in an answer the hub cannot forge".into());

    // The hub as the attacker.
    let refused_before = device.refused().await;
    let fake = SenderKeys::derive(&c, &crate::random_secret())?;
    let forged = control::seal_command(
        &c,
        &fake,
        dev,
        CommandHeader {
            suite: Suite::AES256GCM,
            sender: 0,
            counter: u64::MAX - 1,
            expires: header.expires.max(now_u32()? + 60),
        },
        Op::Set,
        b"off",
    )?;
    let mut altered = captured.posted.message.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let mut floor = 0;
    for (what, msg) in [("forged", forged), ("altered", altered)] {
        let m = NewControl {
            message: msg,
            created_at: now_i64()?,
            expires_at: now_i64()? + 60,
            ..captured.posted.clone()
        };
        let id = s.store.push_control(&m, 64).await?;
        floor = id;
        tokio::time::sleep(NO_ANSWER).await;
        ensure!(
            s.store
                .control_message(dev, id)
                .await?
                .and_then(|m| m.answer)
                .is_none(),
            "a {what} command was answered"
        );
    }
    ensure!(
        device.refused().await >= refused_before + 2 && rebooted.position() == Some(true),
        "a forged or altered command moved the relay"
    );
    say("hub", "forges a command under a key of its own, and alters a byte of a captured one: the device refuses both, unanswered; the relay stays on".into());

    // A faked answer: the hub answers in the device's place before the device can.
    device.stop();
    let inject = async {
        let id = loop {
            let waiting = s.store.pending_control(dev, floor, now_i64()?, 64).await?;
            if let Some(m) = waiting.last() {
                break m.id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let fake_answer =
            control::seal_answer(&c, &fake, dev, &header, [7; 12], Status::Done, b"off")?;
        s.store
            .put_control_answer(dev, id, &fake_answer, now_i64()?)
            .await?;
        anyhow::Ok(())
    };
    let (believed, injected) = tokio::join!(
        s.keeper.command(s.url, &alice, dev, Op::Set, "off", QUICK),
        inject
    );
    injected?;
    match believed {
        Err(KeeperError::ForgedAnswer { .. }) => {}
        other => bail!("a faked answer was believed: {other:?}"),
    }
    ensure!(rebooted.position() == Some(true), "the relay moved");
    say("hub", "answers \"done\" in the device's place: alice's keeper refuses the answer (not authentic); nothing believed".into());

    // A claim without the key.
    let token = hub.claim_start(dev, &mallory).await.err();
    ensure!(
        token.is_some(),
        "the hub issued a claim token for an owned device"
    );
    let device = RunningDevice::start(s.agent, &rebooted)?;
    let wrong = OwnerKeys::from_udk(&c, &crate::random_secret())?;
    let sealed = control::seal_claim(&c, Suite::AES256GCM, &wrong, dev, [9; 12], &[0x5a; 16])?;
    let refused_before = device.refused().await;
    let m = NewControl {
        message: sealed,
        created_at: now_i64()?,
        expires_at: now_i64()? + 60,
        kind: control::CLAIM,
        ..captured.posted.clone()
    };
    let id = s.store.push_control(&m, 64).await?;
    tokio::time::sleep(NO_ANSWER).await;
    ensure!(
        device.refused().await > refused_before
            && s.store
                .control_message(dev, id)
                .await?
                .and_then(|m| m.answer)
                .is_none(),
        "a claim sealed without the user–device key was answered"
    );
    let alice_id = s
        .store
        .account_by_name("alice")
        .await?
        .context("no alice")?
        .id;
    ensure!(
        s.store.owner(dev).await? == Some(alice_id),
        "the owner changed"
    );
    say("hub", "mallory cannot get a claim token for alice's device, and a claim sealed without the user–device key is refused by the device: alice still owns it".into());
    device.stop();

    let book = s.keeper.control()?;
    let mut secrets = vec![*book.user_device_key(dev)?.expose()];
    for m in book.members(dev)?.1 {
        secrets.push(*book.member_key(dev, &m)?.expose());
    }
    Ok(Act { secrets })
}

async fn wait_raw(hub: &HubClient, dev: DeviceId, id: i64, auth: &str) -> Result<Vec<u8>> {
    for _ in 0..4 {
        if let Some(a) = hub
            .control_result(dev, id, Duration::from_secs(5), auth)
            .await?
            .answer
        {
            return Ok(a);
        }
    }
    bail!("no answer to control message {id}")
}

fn now_i64() -> Result<i64> {
    Ok(i64::try_from(crate::timearg::now()?.secs())?)
}

fn now_u32() -> Result<u32> {
    Ok(u32::try_from(crate::timearg::now()?.secs())?)
}
