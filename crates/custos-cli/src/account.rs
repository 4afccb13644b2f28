//! `custos account …`: an account at a hub. `register` and `login` talk to the hub given with `--hub`; `login`
//! keeps the session (hub URL and bearer token) in a file only the user can read, which `whoami`, `passwd` and
//! `logout` use.
//!
//! Passwords come from a prompt that does not echo (when stdin is a terminal) or from `--password-stdin` (the
//! first line of stdin; for `passwd`, the old password on the first line and the new one on the second). They
//! are never taken as arguments, which other users can see.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use custos_client::HubClient;
use serde_json::json;
use zeroize::Zeroizing;

use crate::keeper::usage;

/// The account subcommands.
#[derive(Subcommand)]
pub enum AccountCmd {
    /// Create an account at a hub.
    Register(Credentials),
    /// Log in and keep the session in the session file.
    Login(Credentials),
    /// End the session and delete the session file.
    Logout(SessionArgs),
    /// Change the password; every other session of the account ends.
    Passwd(PasswdArgs),
    /// Show the account of the session: its name, owned devices and devices shared with it.
    Whoami(SessionArgs),
}

/// Where the session file is, and output.
#[derive(Args)]
pub struct SessionArgs {
    /// The session file [default: $XDG_CONFIG_HOME/custos/session.json or ~/.config/custos/session.json].
    #[arg(long, env = "CUSTOS_SESSION")]
    pub(crate) session: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `register` and `login`.
#[derive(Args)]
pub struct Credentials {
    /// The hub's base URL, e.g. http://127.0.0.1:7180.
    #[arg(long, env = "CUSTOS_HUB_URL")]
    hub: String,
    /// The account name (3 to 64 of a-z, 0-9, '.', '_', '-'; upper case is lowered).
    #[arg(long)]
    name: String,
    /// Read the password from the first line of stdin instead of a prompt.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    at: SessionArgs,
}

/// `passwd`.
#[derive(Args)]
pub struct PasswdArgs {
    /// Read the old password from the first line of stdin and the new one from the second.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    at: SessionArgs,
}

/// What the session file holds.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedSession {
    pub(crate) hub: String,
    pub(crate) name: String,
    pub(crate) token: String,
    expires: i64,
    /// The hub's pinned certificate fingerprint, if the login was given one: later commands need no flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fingerprint: Option<String>,
}

impl Drop for SavedSession {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

/// Runs an account subcommand.
pub fn run(cmd: AccountCmd) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            AccountCmd::Register(c) => register(&c).await,
            AccountCmd::Login(c) => login(&c).await,
            AccountCmd::Logout(a) => logout(&a).await,
            AccountCmd::Passwd(a) => passwd(&a).await,
            AccountCmd::Whoami(a) => whoami(&a).await,
        }
    })
}

/// A client for `hub`, trusting it as --hub-ca/--hub-fingerprint say, else as pinned at login, else by the
/// system's roots.
pub(crate) fn client(hub: &str, pinned: Option<&str>) -> Result<HubClient> {
    let trust = match (crate::hub_trust(), pinned) {
        (Some(t), _) => t,
        (None, Some(f)) => custos_client::TlsTrust::Pinned(
            f.parse()
                .map_err(|e| anyhow::anyhow!("the session file's hub fingerprint: {e}"))?,
        ),
        (None, None) => custos_client::TlsTrust::default(),
    };
    Ok(HubClient::new(hub, Duration::from_secs(30), &trust)?)
}

pub(crate) fn session_path(a: &SessionArgs) -> Result<PathBuf> {
    if let Some(p) = &a.session {
        return Ok(p.clone());
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| {
            usage("neither XDG_CONFIG_HOME nor HOME is set: pass --session FILE")
        })?)
        .join(".config"),
    };
    Ok(base.join("custos").join("session.json"))
}

pub(crate) fn read_session(path: &Path) -> Result<SavedSession> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            usage(format!(
                "no session at {}: `custos account login` first",
                path.display()
            ))
        } else {
            anyhow::Error::new(e).context(format!("reading {}", path.display()))
        }
    })?);
    serde_json::from_str(&text).with_context(|| format!("{} is not a session file", path.display()))
}

/// Writes the session file owner-only, replacing any old one atomically.
fn write_session(path: &Path, s: &SavedSession) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let text = Zeroizing::new(serde_json::to_string_pretty(s)?);
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads one line from stdin, or prompts for it without echo on a terminal.
fn read_secret(
    from_stdin: bool,
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    prompt: &str,
) -> Result<Zeroizing<String>> {
    if from_stdin {
        let line = lines
            .next()
            .ok_or_else(|| usage("--password-stdin: stdin ended before the password"))??;
        return Ok(Zeroizing::new(
            line.trim_end_matches(['\r', '\n']).to_string(),
        ));
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(
            "stdin is not a terminal: pass --password-stdin and the password on stdin",
        ));
    }
    prompt_hidden(prompt)
}

/// Prompts on stderr and reads a line from the terminal with echo off (restored afterwards, even on error).
fn prompt_hidden(prompt: &str) -> Result<Zeroizing<String>> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let stdin = std::io::stdin();
    #[cfg(unix)]
    let saved = {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        tcsetattr(&stdin, OptionalActions::Now, &quiet).context("turning echo off")?;
        saved
    };
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    #[cfg(unix)]
    {
        use rustix::termios::{OptionalActions, tcsetattr};
        let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    }
    read?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_string(),
    ))
}

fn stdin_lines() -> impl Iterator<Item = std::io::Result<String>> {
    std::io::stdin().lock().lines()
}

async fn register(c: &Credentials) -> Result<()> {
    let mut lines = stdin_lines();
    let password = read_secret(c.password_stdin, &mut lines, "New password: ")?;
    if !c.password_stdin {
        let again = prompt_hidden("Again: ")?;
        if *again != *password {
            return Err(usage("the two passwords differ"));
        }
    }
    let name = client(&c.hub, None)?.register(&c.name, &password).await?;
    if c.at.json {
        println!("{}", json!({"hub": c.hub, "name": name}));
    } else {
        eprintln!(
            "created account {name} at {}; `custos account login` to use it",
            c.hub
        );
    }
    Ok(())
}

async fn login(c: &Credentials) -> Result<()> {
    let path = session_path(&c.at)?;
    let mut lines = stdin_lines();
    let password = read_secret(c.password_stdin, &mut lines, "Password: ")?;
    let hub = client(&c.hub, None)?;
    let session = hub.login(&c.name, &password).await?;
    let saved = SavedSession {
        hub: hub.base().to_string(),
        name: c.name.to_ascii_lowercase(),
        token: session.token.clone(),
        expires: session.expires,
        fingerprint: match crate::hub_trust() {
            Some(custos_client::TlsTrust::Pinned(f)) => Some(f.to_string()),
            _ => None,
        },
    };
    write_session(&path, &saved)?;
    if c.at.json {
        println!(
            "{}",
            json!({"hub": saved.hub, "name": saved.name, "expires": saved.expires, "session_file": path})
        );
    } else {
        eprintln!(
            "logged in as {} at {}; session kept in {} (mode 0600)",
            saved.name,
            saved.hub,
            path.display()
        );
    }
    Ok(())
}

async fn logout(a: &SessionArgs) -> Result<()> {
    let path = session_path(a)?;
    let saved = read_session(&path)?;
    let result = client(&saved.hub, saved.fingerprint.as_deref())?
        .logout(&saved.token)
        .await;
    // The token is of no use once the hub refused it (the session had ended already): delete the file anyway.
    match &result {
        Ok(()) | Err(custos_client::ClientError::Refused { status: 401, .. }) => {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        Err(_) => {}
    }
    result?;
    if a.json {
        println!(
            "{}",
            json!({"hub": saved.hub, "name": saved.name, "logged_out": true})
        );
    } else {
        eprintln!("logged out of {} at {}", saved.name, saved.hub);
    }
    Ok(())
}

async fn passwd(a: &PasswdArgs) -> Result<()> {
    let saved = read_session(&session_path(&a.at)?)?;
    let mut lines = stdin_lines();
    let old = read_secret(a.password_stdin, &mut lines, "Old password: ")?;
    let new = read_secret(a.password_stdin, &mut lines, "New password: ")?;
    if !a.password_stdin {
        let again = prompt_hidden("Again: ")?;
        if *again != *new {
            return Err(usage("the two new passwords differ"));
        }
    }
    let ended = client(&saved.hub, saved.fingerprint.as_deref())?
        .change_password(&saved.token, &old, &new)
        .await?;
    if a.at.json {
        println!("{}", json!({"name": saved.name, "sessions_ended": ended}));
    } else {
        eprintln!("password changed; {ended} other session(s) ended");
    }
    Ok(())
}

async fn whoami(a: &SessionArgs) -> Result<()> {
    let saved = read_session(&session_path(a)?)?;
    let mut me = client(&saved.hub, saved.fingerprint.as_deref())?
        .whoami(&saved.token)
        .await?;
    me["hub"] = json!(saved.hub);
    if a.json {
        println!("{me}");
        return Ok(());
    }
    println!("{} at {}", me["name"].as_str().unwrap_or("?"), saved.hub);
    let owned = me["owned"].as_array().cloned().unwrap_or_default();
    let shared = me["shared"].as_array().cloned().unwrap_or_default();
    println!("owns {} device(s)", owned.len());
    for d in &owned {
        println!("  {}", d.as_str().unwrap_or("?"));
    }
    println!("shared with it: {} device(s)", shared.len());
    for s in &shared {
        println!(
            "  {} ({})",
            s["device"].as_str().unwrap_or("?"),
            s["rights"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}
