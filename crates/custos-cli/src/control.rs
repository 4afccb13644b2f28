//! `custos device claim|set|state|share|unshare|owners|accept`: owner control through a hub.
//!
//! Commands are sealed by the user's keeper (`--dir`) with keys the hub never sees, and sent as the account of
//! the session `custos account login` saved. `set` waits for the device's answer and believes only an answer
//! that authenticates under the same keys, so "done" means the device did it (docs/wire.md §11).

use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};
use custos_keeper::KeeperError;
use custos_proto::DeviceId;
use custos_proto::control::{Op, Status};
use serde_json::json;

use crate::account::{SavedSession, SessionArgs, read_session, session_path};
use crate::keeper::{DirArg, UnlockArgs, Unlocker, keeper_err, open, usage};

/// The keeper that holds the keys, and the session to send with.
#[derive(Args)]
pub struct ControlAt {
    #[command(flatten)]
    keeper: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    #[command(flatten)]
    session: SessionArgs,
    /// How long to wait for the device's answer.
    #[arg(long, default_value = "30s")]
    timeout: String,
}

/// `custos device claim`.
#[derive(Args)]
pub struct ClaimArgs {
    /// The device id (16 hex digits).
    device: DeviceId,
    #[command(flatten)]
    at: ControlAt,
}

/// `custos device set`.
#[derive(Args)]
pub struct SetArgs {
    /// The device id.
    device: DeviceId,
    /// The new state: on, off, or a value such as 21.5 (at most 64 bytes).
    state: String,
    #[command(flatten)]
    at: ControlAt,
}

/// `custos device get`.
#[derive(Args)]
pub struct GetArgs {
    /// The device id.
    device: DeviceId,
    #[command(flatten)]
    at: ControlAt,
}

/// What a share lets the other account do.
#[derive(Clone, Copy, ValueEnum)]
pub enum RightsArg {
    /// Send commands (and see state and records).
    Control,
    /// See state and records only.
    View,
}

/// `custos device share`.
#[derive(Args)]
pub struct ShareArgs {
    /// The device id.
    device: DeviceId,
    /// The account to share it with.
    #[arg(long = "with")]
    with: String,
    /// What the account may do.
    #[arg(long, value_enum, default_value = "control")]
    rights: RightsArg,
    #[command(flatten)]
    at: ControlAt,
}

/// `custos device unshare`.
#[derive(Args)]
pub struct UnshareArgs {
    /// The device id.
    device: DeviceId,
    /// The account to take it from.
    #[arg(long = "from")]
    from: String,
    #[command(flatten)]
    at: ControlAt,
}

/// `custos device accept`.
#[derive(Args)]
pub struct AcceptArgs {
    /// The share code the device's owner gave you (custos-share-1:…); read from stdin if omitted, so that it
    /// does not show in the process list.
    code: Option<String>,
    #[command(flatten)]
    keeper: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `custos device state` and `custos device owners`.
#[derive(Args)]
pub struct ViewArgs {
    /// The device id.
    device: DeviceId,
    #[command(flatten)]
    session: SessionArgs,
}

fn session(a: &SessionArgs) -> Result<SavedSession> {
    read_session(&session_path(a)?)
}

fn auth(s: &SavedSession) -> String {
    format!("Bearer {}", s.token)
}

fn timeout(text: &str) -> Result<Duration> {
    Ok(Duration::from_secs(crate::keeper::parse_duration(
        "--timeout",
        text,
        false,
    )?))
}

/// Opens the keeper and applies the session's pinned hub certificate if the keeper has no trust of its own.
fn keeper_for(
    at: &ControlAt,
    s: &SavedSession,
) -> Result<(custos_keeper::Keeper, crate::keeper::DirLock)> {
    let unlocker = Unlocker::from_args(&at.unlock)?;
    let (mut keeper, lock) = open(&at.keeper.dir, &unlocker)?;
    if crate::hub_trust().is_none()
        && let Some(f) = &s.fingerprint
        && matches!(keeper.hub_trust(), custos_client::TlsTrust::System)
    {
        let f = f
            .parse()
            .map_err(|e| anyhow::anyhow!("the session file's hub fingerprint: {e}"))?;
        keeper
            .set_hub_trust(custos_client::TlsTrust::Pinned(f))
            .map_err(keeper_err)?;
    }
    Ok((keeper, lock))
}

fn control_err(e: KeeperError) -> anyhow::Error {
    match e {
        KeeperError::NoControl(_) | KeeperError::NotOwner(_) | KeeperError::BadShareCode => {
            usage(e.to_string())
        }
        other => keeper_err(other),
    }
}

/// Claims a device for the session's account.
pub fn claim(a: &ClaimArgs) -> Result<()> {
    let s = session(&a.at.session)?;
    let (keeper, _lock) = keeper_for(&a.at, &s)?;
    crate::keeper::runtime()?
        .block_on(keeper.claim(&s.hub, &auth(&s), a.device, timeout(&a.at.timeout)?))
        .map_err(control_err)?;
    if a.at.session.json {
        println!(
            "{}",
            json!({"device": a.device.to_string(), "owner": s.name})
        );
    } else {
        eprintln!("device {} is now owned by account {}", a.device, s.name);
    }
    Ok(())
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Done => "done",
        Status::Replayed => "refused as a replay",
        Status::Expired => "refused as expired",
        Status::Failed => "failed",
        Status::BadValue => "refused: the device does not take that value",
    }
}

fn command(at: &ControlAt, device: DeviceId, op: Op, value: &str) -> Result<()> {
    let s = session(&at.session)?;
    let (keeper, _lock) = keeper_for(at, &s)?;
    let out = crate::keeper::runtime()?
        .block_on(keeper.command(&s.hub, &auth(&s), device, op, value, timeout(&at.timeout)?))
        .map_err(control_err)?;
    if at.session.json {
        println!(
            "{}",
            json!({"device": device.to_string(), "id": out.id, "counter": out.counter,
                "status": format!("{:?}", out.status).to_lowercase(), "state": out.state})
        );
    } else {
        println!(
            "device {device}: {} (state {}); the device's answer is authentic",
            status_name(out.status),
            if out.state.is_empty() {
                "unknown"
            } else {
                &out.state
            }
        );
    }
    if out.status == Status::Done {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "the device did not do it: {}",
            status_name(out.status)
        ))
    }
}

/// Sets a device's state and waits for its authenticated answer.
pub fn set(a: &SetArgs) -> Result<()> {
    if a.state.is_empty() || a.state.len() > custos_proto::control::MAX_VALUE {
        return Err(usage("the state must be 1 to 64 bytes"));
    }
    command(&a.at, a.device, Op::Set, &a.state)
}

/// Asks a device for its state, end to end.
pub fn get(a: &GetArgs) -> Result<()> {
    command(&a.at, a.device, Op::Get, "")
}

/// Shares a device with another account.
pub fn share(a: &ShareArgs) -> Result<()> {
    let s = session(&a.at.session)?;
    let client = crate::account::client(&s.hub, s.fingerprint.as_deref())?;
    let rights = match a.rights {
        RightsArg::Control => "control",
        RightsArg::View => "view",
    };
    let rt = crate::keeper::runtime()?;
    rt.block_on(client.account_call(
        reqwest::Method::POST,
        &format!("/v1/devices/{}/shares", a.device),
        Some(&json!({"account": a.with, "rights": rights})),
        &auth(&s),
    ))?;
    let code = match a.rights {
        RightsArg::View => None,
        RightsArg::Control => {
            let (keeper, _lock) = keeper_for(&a.at, &s)?;
            Some(
                rt.block_on(keeper.share_control(
                    &s.hub,
                    &auth(&s),
                    a.device,
                    &a.with,
                    timeout(&a.at.timeout)?,
                ))
                .map_err(control_err)?,
            )
        }
    };
    if a.at.session.json {
        println!(
            "{}",
            json!({"device": a.device.to_string(), "account": a.with, "rights": rights,
                "share_code": code.as_ref().map(|c| c.as_str())})
        );
    } else {
        eprintln!("device {} shared with {} ({rights})", a.device, a.with);
        if let Some(c) = &code {
            eprintln!(
                "give {} this share code yourself (not through the hub); they run `custos device accept`:",
                a.with
            );
            println!("{}", c.as_str());
        }
    }
    Ok(())
}

/// Withdraws a share; for control, the device acknowledges the new list before this returns.
pub fn unshare(a: &UnshareArgs) -> Result<()> {
    let s = session(&a.at.session)?;
    let client = crate::account::client(&s.hub, s.fingerprint.as_deref())?;
    let rt = crate::keeper::runtime()?;
    let (keeper, _lock) = keeper_for(&a.at, &s)?;
    let was_member = rt
        .block_on(keeper.unshare_control(
            &s.hub,
            &auth(&s),
            a.device,
            &a.from,
            timeout(&a.at.timeout)?,
        ))
        .map_err(control_err)?;
    rt.block_on(client.account_call(
        reqwest::Method::DELETE,
        &format!("/v1/devices/{}/shares/{}", a.device, a.from),
        None,
        &auth(&s),
    ))?;
    if a.at.session.json {
        println!(
            "{}",
            json!({"device": a.device.to_string(), "account": a.from, "revoked_on_device": was_member})
        );
    } else {
        eprintln!(
            "{} no longer has device {}{}",
            a.from,
            a.device,
            if was_member {
                "; the device acknowledged the new list, so it refuses their commands"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Takes a share code.
pub fn accept(a: &AcceptArgs) -> Result<()> {
    let code = match &a.code {
        Some(c) => zeroize::Zeroizing::new(c.clone()),
        None => {
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin().read_line(&mut line)?;
            line
        }
    };
    let unlocker = Unlocker::from_args(&a.unlock)?;
    let (keeper, _lock) = open(&a.keeper.dir, &unlocker)?;
    let device = keeper.accept_share(&code).map_err(control_err)?;
    if a.json {
        println!("{}", json!({"device": device.to_string()}));
    } else {
        eprintln!("this keeper can now command device {device}");
    }
    Ok(())
}

fn view(a: &ViewArgs, path: &str) -> Result<serde_json::Value> {
    let s = session(&a.session)?;
    let client = crate::account::client(&s.hub, s.fingerprint.as_deref())?;
    Ok(crate::keeper::runtime()?.block_on(client.account_call(
        reqwest::Method::GET,
        &format!("/v1/devices/{}/{path}", a.device),
        None,
        &auth(&s),
    ))?)
}

/// Shows a device's state and presence as its last heartbeat reported it to the hub.
pub fn state(a: &ViewArgs) -> Result<()> {
    let v = view(a, "state")?;
    if a.session.json {
        println!("{v}");
    } else {
        println!(
            "device {}: {} — state {} (reported to the hub; `custos device get` asks the device itself)",
            a.device,
            if v["online"].as_bool() == Some(true) {
                "online"
            } else {
                "offline"
            },
            v["state"].as_str().unwrap_or("unknown"),
        );
    }
    Ok(())
}

/// Shows who owns a device and who it is shared with.
pub fn owners(a: &ViewArgs) -> Result<()> {
    let v = view(a, "shares")?;
    if a.session.json {
        println!("{v}");
    } else {
        println!("owner: {}", v["owner"].as_str().unwrap_or("?"));
        for sh in v["shares"].as_array().into_iter().flatten() {
            println!(
                "shared with {} ({})",
                sh["account"].as_str().unwrap_or("?"),
                sh["rights"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}
